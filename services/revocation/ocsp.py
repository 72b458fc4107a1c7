"""An RFC 6960 OCSP responder: good, revoked (time and reason) or unknown, signed by a delegated
OCSP signing certificate of the CA that issued the certificate asked about.

Answers without a nonce are cached per (CA, serial) until half their validity has passed, and
dropped the moment the certificate's status changes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509 import ocsp

from shared.clock import Clock, SystemClock
from shared.pki import RevocationReason

log = logging.getLogger("certbus.revocation.ocsp")

# Answers change the moment a revocation lands, so HTTP intermediaries must not keep them;
# the responder's own caches are invalidated instead.
NO_STORE = {"Cache-Control": "no-store"}

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class CertificateStatus:
    """What the responder knows of one serial of one CA."""

    known: bool
    revoked_at: datetime | None = None
    reason: RevocationReason | None = None


@dataclass(frozen=True)
class Signer:
    """A delegated OCSP signing certificate with its key (and the chain up to the CA)."""

    certificate: x509.Certificate
    key: object
    chain: tuple[x509.Certificate, ...] = ()


class Authority(Protocol):
    """What the responder asks of the rest of the service."""

    async def issuers(self) -> dict[str, x509.Certificate]: ...

    async def status(self, ca: str, serial: int) -> CertificateStatus: ...

    def signer(self, ca: str) -> Signer | None: ...


def issuer_hashes(cert: x509.Certificate, algorithm: str) -> tuple[bytes, bytes]:
    """The (issuerNameHash, issuerKeyHash) a request names ``cert`` by, RFC 6960 section 4.1.1."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Read the BIT STRING generically: asn1crypto's key classes do not know every algorithm
    # (ML-DSA, for one), and the key hash covers only the bits, whatever the algorithm.
    key_bits = asn1_core.Sequence.load(spki)[1].contents[1:]
    name_der = cert.subject.public_bytes()
    return hashlib.new(algorithm, name_der).digest(), hashlib.new(algorithm, key_bits).digest()


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


def _signing_hash(key: object) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


class Responder:
    """Answers from two small caches (statuses, and whole answers to nonce-less requests), both
    dropped for a certificate the moment its status changes and kept ``cache_for`` at most."""

    MAX_ENTRIES = 200_000

    def __init__(
        self,
        authority: Authority,
        validity: timedelta,
        clock: Clock | None = None,
        cache_for: timedelta = timedelta(seconds=60),
    ) -> None:
        self._authority = authority
        self._validity = validity
        self._clock = clock or SystemClock()
        self._cache_for = min(cache_for, validity / 2)
        self._index: dict[tuple[str, bytes, bytes], str] = {}
        self._answers: dict[tuple[str, int, str], tuple[datetime, bytes]] = {}
        self._statuses: dict[tuple[str, int], tuple[datetime, CertificateStatus]] = {}
        self._generation = 0

    def invalidate(self, ca: str, serial: int) -> None:
        """The status of (ca, serial) changed: never serve the old answer again."""
        self._generation += 1
        self._statuses.pop((ca, serial), None)
        for algorithm in _HASHES:
            self._answers.pop((ca, serial, algorithm), None)

    def learn(self, ca: str, serial: int, status: CertificateStatus) -> None:
        """This process just changed (ca, serial) to ``status``: answer from it at once."""
        self.invalidate(ca, serial)
        self._remember(self._statuses, (ca, serial), (self._clock.now() + self._cache_for, status))

    def forget_issuers(self) -> None:
        self._generation += 1
        self._index.clear()
        self._answers.clear()
        self._statuses.clear()

    async def respond(self, request_der: bytes) -> tuple[bytes, dict[str, str]]:
        """Answer one DER OCSPRequest; returns the DER response and HTTP headers."""
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            algorithm = request.hash_algorithm.name
        except (ValueError, NotImplementedError, x509.UnsupportedGeneralNameType):
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST), NO_STORE
        if algorithm not in _HASHES:
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST), NO_STORE
        ca = await self._issuer_of(request, algorithm)
        if ca is None:
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED), NO_STORE
        signer = self._authority.signer(ca)
        if signer is None:
            return _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER), NO_STORE
        nonce = _nonce(request)
        now = self._clock.now().replace(microsecond=0)
        key = (ca, request.serial_number, algorithm)
        if nonce is None:
            cached = self._answers.get(key)
            if cached is not None and cached[0] > now:
                return cached[1], NO_STORE
        generation = self._generation
        status = await self._status(ca, request.serial_number, now)
        body = self._build(request, algorithm, status, signer, nonce, now)
        if nonce is None and generation == self._generation:
            self._remember(self._answers, key, (now + self._cache_for, body))
        return body, NO_STORE

    async def _status(self, ca: str, serial: int, now: datetime) -> CertificateStatus:
        cached = self._statuses.get((ca, serial))
        if cached is not None and cached[0] > now:
            return cached[1]
        generation = self._generation
        status = await self._authority.status(ca, serial)
        if generation == self._generation:
            self._remember(self._statuses, (ca, serial), (now + self._cache_for, status))
        return status

    def _remember(self, cache: dict, key: object, value: object) -> None:  # type: ignore[type-arg]
        if len(cache) >= self.MAX_ENTRIES:
            cache.clear()
        cache[key] = value

    async def _issuer_of(self, request: ocsp.OCSPRequest, algorithm: str) -> str | None:
        wanted = (algorithm, request.issuer_name_hash, request.issuer_key_hash)
        if wanted not in self._index:
            for name, cert in (await self._authority.issuers()).items():
                name_hash, key_hash = issuer_hashes(cert, algorithm)
                self._index[(algorithm, name_hash, key_hash)] = name
        return self._index.get(wanted)

    def _build(
        self,
        request: ocsp.OCSPRequest,
        algorithm: str,
        status: CertificateStatus,
        signer: Signer,
        nonce: x509.OCSPNonce | None,
        now: datetime,
    ) -> bytes:
        if not status.known:
            cert_status, revoked_at, reason = ocsp.OCSPCertStatus.UNKNOWN, None, None
        elif status.revoked_at is not None:
            cert_status = ocsp.OCSPCertStatus.REVOKED
            revoked_at = status.revoked_at
            reason = (status.reason or RevocationReason.UNSPECIFIED).x509_flag
        else:
            cert_status, revoked_at, reason = ocsp.OCSPCertStatus.GOOD, None, None
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=request.issuer_name_hash,
                issuer_key_hash=request.issuer_key_hash,
                serial_number=request.serial_number,
                algorithm=_HASHES[algorithm](),
                cert_status=cert_status,
                this_update=now,
                next_update=now + self._validity,
                revocation_time=revoked_at,
                revocation_reason=reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
            .certificates([signer.certificate])
        )
        if nonce is not None:
            builder = builder.add_extension(nonce, critical=False)
        response = builder.sign(signer.key, _signing_hash(signer.key))  # type: ignore[arg-type]
        return response.public_bytes(serialization.Encoding.DER)


def _nonce(request: ocsp.OCSPRequest) -> x509.OCSPNonce | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value
    except x509.ExtensionNotFound:
        return None
