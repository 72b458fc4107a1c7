"""Delegated OCSP signing certificates: a key of our own per CA, kept encrypted on disk (0600),
certified by the issuer over ``rpc.issuer.ocsp.signer`` and renewed well before it expires."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.revocation.ocsp import Signer
from shared.clock import Clock, SystemClock
from shared.pki import load_certificate, pem
from shared.subjects import subject_token

log = logging.getLogger("certbus.revocation.signers")


class SignerAuthority(Protocol):
    """Whoever certifies our OCSP signing keys: the issuer, which holds the CA keys."""

    async def certify(self, ca: str, csr_pem: str) -> tuple[str, list[str]]: ...


class UnusableSignerCertificate(ValueError):
    """The issuer returned a certificate we cannot sign OCSP responses with."""


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def keyring_passphrase(directory: Path, configured: str | None) -> bytes:
    """The passphrase protecting the keys: configured, or generated once next to them (0600)."""
    if configured:
        return configured.encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "keyring.pass"
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32).encode())
    return path.read_bytes().strip()


class SignerKeyring:
    def __init__(
        self,
        directory: Path,
        passphrase: Callable[[], bytes],
        authority: SignerAuthority,
        renew_before: timedelta,
        clock: Clock | None = None,
    ) -> None:
        self._dir = directory
        self._passphrase_source = passphrase
        self._secret: bytes | None = None
        self._authority = authority
        self._renew_before = renew_before
        self._clock = clock or SystemClock()
        self._signers: dict[str, Signer] = {}

    def _passphrase(self) -> bytes:
        """Read (or make) the passphrase on first use, so building the service touches no file."""
        if self._secret is None:
            self._secret = self._passphrase_source()
        return self._secret

    def get(self, ca: str) -> Signer | None:
        signer = self._signers.get(ca)
        if signer is not None and signer.certificate.not_valid_after_utc <= self._clock.now():
            return None
        return signer

    def fresh(self, ca: str) -> bool:
        signer = self._signers.get(ca)
        return signer is not None and not self._due(signer.certificate)

    def _due(self, cert: x509.Certificate) -> bool:
        return cert.not_valid_after_utc - self._renew_before <= self._clock.now()

    def _paths(self, ca: str) -> tuple[Path, Path]:
        stem = subject_token(ca)
        return self._dir / f"{stem}.key", self._dir / f"{stem}.pem"

    async def ensure(self, ca: str, ca_cert: x509.Certificate) -> Signer:
        """A usable signer for ``ca``: from disk if still fresh, else newly certified."""
        if self.fresh(ca):
            return self._signers[ca]
        loaded = self._load(ca, ca_cert)
        if loaded is not None and not self._due(loaded.certificate):
            self._signers[ca] = loaded
            return loaded
        signer = await self._certify(ca, ca_cert)
        self._signers[ca] = signer
        return signer

    def _load(self, ca: str, ca_cert: x509.Certificate) -> Signer | None:
        key_path, cert_path = self._paths(ca)
        if not key_path.exists() or not cert_path.exists():
            return None
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), self._passphrase())
            certs = x509.load_pem_x509_certificates(cert_path.read_bytes())
            return self._checked(certs[0], key, certs[1:], ca_cert)
        except (ValueError, UnusableSignerCertificate) as exc:
            log.warning("OCSP signer of %s on disk is unusable (%s); requesting a new one", ca, exc)
            return None

    async def _certify(self, ca: str, ca_cert: x509.Certificate) -> Signer:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{ca} OCSP responder")])
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        cert_pem, chain_pem = await self._authority.certify(
            ca, csr.public_bytes(serialization.Encoding.PEM).decode()
        )
        chain = [load_certificate(c) for c in chain_pem]
        signer = self._checked(load_certificate(cert_pem), key, chain, ca_cert)
        self._dir.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = self._paths(ca)
        _write_private(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(self._passphrase()),
            ),
        )
        _write_private(cert_path, "".join(pem(c) for c in [signer.certificate, *chain]).encode())
        log.info(
            "OCSP signer for %s certified until %s", ca, signer.certificate.not_valid_after_utc
        )
        return signer

    def _checked(
        self,
        cert: x509.Certificate,
        key: object,
        chain: list[x509.Certificate],
        ca_cert: x509.Certificate,
    ) -> Signer:
        public = key.public_key()  # type: ignore[attr-defined]
        if cert.public_key() != public:
            raise UnusableSignerCertificate("certificate is for another key")
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise UnusableSignerCertificate(f"not issued by the CA: {exc}") from exc
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound as exc:
            raise UnusableSignerCertificate("no extended key usage") from exc
        if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
            raise UnusableSignerCertificate("extended key usage lacks OCSPSigning")
        if cert.not_valid_after_utc <= self._clock.now():
            raise UnusableSignerCertificate("expired")
        return Signer(certificate=cert, key=key, chain=tuple(chain))
