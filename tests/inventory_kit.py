"""What the inventory and agent tests share: a CA that signs CSRs, and a bus reader."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared import pki, subjects
from shared.clock import utcnow
from shared.events import CertIssued, CertRequested, Event, derived_id


class TestCA:
    """Signs CSRs the way the issuer would, and describes the result as ``cert.issued``."""

    __test__ = False

    def __init__(self, name: str = "test-ca") -> None:
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.dn = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"certbus {name}")])
        now = utcnow()
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.dn)
            .issuer_name(self.dn)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def sign(
        self, csr: x509.CertificateSigningRequest, days: int = 30, aged_days: int = 0
    ) -> x509.Certificate:
        """Valid for ``days``, of which ``aged_days`` have already passed."""
        assert csr.is_signature_valid
        start = utcnow() - timedelta(days=aged_days, minutes=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.dn)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=days))
        )
        for ext in csr.extensions:
            builder = builder.add_extension(ext.value, ext.critical)
        return builder.sign(self.key, hashes.SHA256())

    def issue(self, request: CertRequested, aged_days: int = 0) -> CertIssued:
        csr = x509.load_pem_x509_csr((request.csr_pem or "").encode())
        cert = self.sign(csr, aged_days=aged_days)
        key_type, key_size = pki.describe_key(cert.public_key())
        serial = pki.render_serial(cert.serial_number)
        return request.caused(
            CertIssued,
            event_id=derived_id("issued", request.request_id),
            request_id=request.request_id,
            cert_id=derived_id("cert", request.request_id),
            serial=serial,
            issuer_ca=self.name,
            issuer_dn=self.dn.rfc4514_string(),
            subject_dn=cert.subject.rfc4514_string(),
            sans=request.sans,
            thumbprint_sha1=pki.thumbprint(cert, "sha1"),
            thumbprint_sha256=pki.thumbprint(cert),
            public_key_sha256=pki.public_key_sha256(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            template=request.template,
            key_type=key_type,
            key_size=key_size,
            signature_algorithm=pki.signature_algorithm_name(cert),
            owner=request.owner,
            device=request.device,
            target=request.target,
            job_id=request.job_id,
            certificate_pem=pki.pem(cert),
            chain_pem=[pki.pem(self.certificate)],
            renewal_of=request.renewal_of,
        )


class BusReader:
    """Reads every message stored on a subject, from the start, as JSON."""

    def __init__(self, nc: Any) -> None:
        self.js = nc.jetstream()
        self._subs: dict[str, Any] = {}

    async def take(self, subject: str, n: int, within: float = 15.0) -> list[dict[str, Any]]:
        if subject not in self._subs:
            # Durable, so the reader survives long pauses (an ephemeral consumer is reaped).
            self._subs[subject] = await self.js.pull_subscribe(
                subject,
                durable=f"reader-{uuid.uuid4().hex[:12]}",
                stream=subjects.stream_for(subject),
            )
        sub = self._subs[subject]
        out: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(out) < n and loop.time() < deadline:
            try:
                msgs = await sub.fetch(n - len(out), timeout=0.5)
            except TimeoutError:
                continue
            for m in msgs:
                out.append(json.loads(m.data))
                await m.ack()
        return out

    async def none_more(self, subject: str, wait: float = 1.0) -> list[dict[str, Any]]:
        """Whatever else arrives on ``subject`` within ``wait`` seconds (expected: nothing)."""
        return await self.take(subject, 1000, within=wait)


async def publish(nc: Any, *events: Event) -> None:
    js = nc.jetstream()
    for ev in events:
        await js.publish(
            ev.subject_name(), ev.model_dump_json().encode(), headers={"Nats-Msg-Id": ev.event_id}
        )


async def eventually(check: Any, within: float = 15.0, interval: float = 0.1) -> Any:
    """Poll an async ``check`` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result or loop.time() > deadline:
            return result
        await asyncio.sleep(interval)


def openssl_pubkey(args: list[str]) -> str:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True).stdout


def cert_and_key_match(cert_file: Path, key_file: Path) -> bool:
    """The independent check: openssl's view of the certificate's and the key's public key."""
    cert_pub = openssl_pubkey(["x509", "-in", str(cert_file), "-noout", "-pubkey"])
    key_pub = openssl_pubkey(["pkey", "-in", str(key_file), "-pubout"])
    return cert_pub.strip() == key_pub.strip() and "BEGIN PUBLIC KEY" in cert_pub


async def stand_in_issuer(
    nc: Any, ca: TestCA, durable: str = "test-issuer", aged_days: Any = None
) -> None:
    """Signs every CSR on cert.requested, as the issuer service would (run it as a task).
    ``aged_days(request)``: how many days of each certificate's life have already passed."""
    sub = await nc.jetstream().pull_subscribe(subjects.CERT_REQUESTED, durable=durable)
    while True:
        try:
            msgs = await sub.fetch(10, timeout=0.5)
        except TimeoutError:
            continue
        for m in msgs:
            request = CertRequested.model_validate_json(m.data)
            await publish(nc, ca.issue(request, aged_days=aged_days(request) if aged_days else 0))
            await m.ack()


SERVER_KEY_POLICY = """
defaults:
  store_type: pem
  store_path: "certs/{template}"
  alias: "{template}-{user}"
  subject: "CN={user}"
  sans: []
  key_type: ec-p256
  key: device
rules:
  - name: kiosks
    match: {roles: [kiosk]}
    provision:
      - template: machine-client
        subject: "CN={device}"
        sans: ["dns:{device}"]
        alias: "{template}"
        key: server
"""
"""A policy whose kiosks get a key made by the issuer (``key: server``)."""
