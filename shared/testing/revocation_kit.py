"""Real certificates, CRLs and bus helpers for the revocation service's tests and benchmarks.

A ``LabCa`` makes a CA key at run time (nothing secret is committed) and issues leaf
certificates announced as ``cert.issued``, as the issuer would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared import subjects
from shared.events import CaCreated, CertIssued, CrlPublished, Event, new_id
from shared.pki import pem, public_key_sha256, render_serial, thumbprint

_LEAF_KEY = ec.generate_private_key(ec.SECP256R1())


@dataclass
class LabCa:
    name: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    certificate: x509.Certificate | None = None

    def __post_init__(self) -> None:
        now = datetime.now(UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{self.name} test CA")])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert(self) -> x509.Certificate:
        assert self.certificate is not None
        return self.certificate

    def created(self) -> CaCreated:
        return CaCreated(
            ca=self.name,
            subject_dn=self.cert.subject.rfc4514_string(),
            key_type="EC-P256",
            certificate_pem=pem(self.cert),
        )

    def issue(
        self, cn: str, key: ec.EllipticCurvePrivateKey | None = None, serial: int | None = None
    ) -> x509.Certificate:
        now = datetime.now(UTC)
        public = (key or _LEAF_KEY).public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    def issued_event(
        self,
        cn: str,
        owner: str | None = None,
        device: str | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> CertIssued:
        cert = self.issue(cn, key)
        return cert_issued(self.name, cert, owner=owner, device=device)

    def crl(
        self,
        number: int,
        revoked: list[tuple[int, datetime]],
        delta_of: int | None = None,
        next_update: timedelta = timedelta(hours=1),
    ) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding

        now = datetime.now(UTC)
        entries = [
            x509.RevokedCertificateBuilder().serial_number(s).revocation_date(at).build()
            for s, at in revoked
        ]
        builder = (
            x509.CertificateRevocationListBuilder(revoked_certificates=entries)
            .issuer_name(self.cert.subject)
            .last_update(now)
            .next_update(now + next_update)
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        if delta_of is not None:
            builder = builder.add_extension(x509.DeltaCRLIndicator(delta_of), critical=True)
        return builder.sign(self.key, hashes.SHA256()).public_bytes(Encoding.DER)


def cert_issued(
    ca: str, cert: x509.Certificate, owner: str | None = None, device: str | None = None
) -> CertIssued:
    return CertIssued(
        request_id=new_id(),
        cert_id=new_id(),
        serial=render_serial(cert.serial_number),
        issuer_ca=ca,
        issuer_dn=cert.issuer.rfc4514_string(),
        subject_dn=cert.subject.rfc4514_string(),
        thumbprint_sha1=thumbprint(cert, "sha1"),
        thumbprint_sha256=thumbprint(cert),
        public_key_sha256=public_key_sha256(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        template="test",
        key_type="EC-secp256r1",
        key_size=256,
        signature_algorithm="ecdsa-with-SHA256",
        owner=owner,
        device=device,
        certificate_pem=pem(cert),
    )


def crl_published(
    ca: str,
    number: int,
    der: bytes,
    object_name: str,
    delta_of: int | None = None,
    entries: int = 0,
) -> CrlPublished:
    import hashlib

    crl = x509.load_der_x509_crl(der)
    next_update = crl.next_update_utc
    if next_update is None:
        raise ValueError("the CRL has no nextUpdate")
    return CrlPublished(
        ca=ca,
        crl_number=number,
        delta=delta_of is not None,
        base_crl_number=delta_of,
        this_update=crl.last_update_utc,
        next_update=next_update,
        entries=entries,
        object_name=object_name,
        sha256=hashlib.sha256(der).hexdigest(),
    )


async def publish(js, *events: Event, msg_id: str | None = None) -> None:  # type: ignore[no-untyped-def]
    for ev in events:
        await js.publish(
            ev.subject_name(),
            ev.model_dump_json().encode(),
            headers={"Nats-Msg-Id": msg_id or ev.event_id},
        )


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], within: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def drained(js, service: str, *subject_names: str) -> bool:  # type: ignore[no-untyped-def]
    """Every message on these subjects was handled and acknowledged by ``service``.

    The consumer's pending count is updated asynchronously after a publish, so it is not enough
    on its own: the ack floor must also have reached the subject's last message.
    """
    from nats.js.errors import NotFoundError

    for subject in subject_names:
        stream = subjects.stream_for(subject)
        try:
            last = (await js.get_last_msg(stream, subject)).seq
        except NotFoundError:
            continue
        try:
            info = await js.consumer_info(stream, subjects.durable_name(service, subject))
        except Exception:  # noqa: BLE001 - not created yet
            return False
        if info.num_pending or info.num_ack_pending or (info.ack_floor.stream_seq or 0) < last:
            return False
    return True


async def messages_on(js, subject: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """Every message the stream holds on ``subject``, oldest first."""
    stream = subjects.stream_for(subject)
    sub = await js.pull_subscribe(subject, stream=stream)
    out: list[dict] = []
    try:
        while (await sub.consumer_info()).num_pending:
            try:
                msgs = await sub.fetch(500, timeout=1.0)
            except TimeoutError:
                continue
            for m in msgs:
                out.append(json.loads(m.data))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


def certify_ocsp_signer(ca: LabCa, csr_pem: str, days: int = 30) -> x509.Certificate:
    """What the issuer's ``ocsp.signer`` RPC does: a delegated OCSP signing certificate."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )


async def serve_ocsp_signer_rpc(nc, cas: dict[str, LabCa]):  # type: ignore[no-untyped-def]
    """Answer ``rpc.issuer.ocsp.signer`` for these CAs, as the issuer would; returns the
    subscription (unsubscribe it to make the issuer go away)."""

    async def answer(msg) -> None:  # type: ignore[no-untyped-def]
        request = json.loads(msg.data)
        ca = cas.get(request.get("ca"))
        if ca is None:
            reply = {
                "ok": False,
                "error": {"code": "not_found", "message": "no such CA", "status": 404},
            }
        else:
            cert = certify_ocsp_signer(ca, request["csr"])
            reply = {
                "ok": True,
                "result": {"certificate_pem": pem(cert), "chain_pem": [pem(ca.cert)]},
            }
        await msg.respond(json.dumps(reply).encode())

    return await nc.subscribe(subjects.rpc("issuer", "ocsp.signer"), cb=answer)
