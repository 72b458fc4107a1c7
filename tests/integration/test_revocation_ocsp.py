"""The OCSP responder, asked by `openssl ocsp` and by cryptography's OCSP client code."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ec import ECDSA
from cryptography.x509 import ocsp

from services.revocation.app import RevocationService, wire
from services.revocation.settings import RevocationSettings
from shared import subjects
from shared.pki import pem
from shared.testing.revocation_kit import (
    LabCa,
    cert_issued,
    drained,
    publish,
    serve_ocsp_signer_rpc,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def ca() -> LabCa:
    return LabCa("corp")


@pytest.fixture
async def service(
    nats_url: str, nats_client, tmp_path: Path, ca: LabCa
) -> AsyncIterator[RevocationService]:
    await serve_ocsp_signer_rpc(nats_client, {"corp": ca})
    settings = RevocationSettings(
        nats_url=nats_url,
        revocation_database_url=f"sqlite+aiosqlite:///{tmp_path / 'revocation.db'}",
        var_dir=tmp_path / "var",
        public_port=0,
    )
    svc = wire(settings)
    await svc.runtime.app.start()
    await publish(nats_client.jetstream(), ca.created())
    await wait_until(_ready(svc), what="the OCSP signer")
    try:
        yield svc
    finally:
        await svc.runtime.app.stop()


def _ready(svc: RevocationService):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return svc.provisioner.ready.is_set()

    return check


async def announce(nats_client, ca: LabCa, *certs: x509.Certificate) -> None:  # type: ignore[no-untyped-def]
    js = nats_client.jetstream()
    await publish(js, *(cert_issued(ca.name, c, owner="alice") for c in certs))
    await wait_until(lambda: drained(js, "revocation", subjects.CERT_ISSUED), what="cert.issued")


async def rpc(nats_client, operation: str, payload: dict) -> dict:  # type: ignore[no-untyped-def]
    reply = await nats_client.request(
        subjects.rpc("revocation", operation), json.dumps(payload).encode(), timeout=10
    )
    return json.loads(reply.data)


def ocsp_request(ca: LabCa, cert: x509.Certificate, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, ca.cert, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


async def ask(service: RevocationService, der: bytes) -> ocsp.OCSPResponse:
    async with httpx.AsyncClient(base_url=service.public.url) as http:
        response = await http.post(
            "/ocsp", content=der, headers={"Content-Type": "application/ocsp-request"}
        )
    assert response.headers["content-type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content)


async def openssl_ocsp(
    tmp_path: Path, service: RevocationService, ca: LabCa, cert: x509.Certificate
) -> str:
    """Run ``openssl ocsp`` without blocking the loop the responder runs in."""
    ca_file, leaf = tmp_path / "ca.pem", tmp_path / "leaf.pem"
    ca_file.write_text(pem(ca.cert))
    leaf.write_text(pem(cert))
    url = f"{service.public.url}/ocsp"
    process = await asyncio.create_subprocess_exec(
        "openssl", "ocsp", "-issuer", str(ca_file), "-cert", str(leaf), "-url", url,
        "-CAfile", str(ca_file), "-resp_text",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    return out.decode()


async def test_openssl_hears_good_revoked_and_unknown_with_a_verified_response(
    service: RevocationService, nats_client, ca: LabCa, tmp_path: Path
) -> None:
    good, bad, stranger = ca.issue("good"), ca.issue("bad"), ca.issue("never-announced")
    await announce(nats_client, ca, good, bad)
    reply = await rpc(
        nats_client,
        "revoke",
        {
            "serial": format(bad.serial_number, "x"),
            "reason": "keyCompromise",
            "comment": "key leaked",
        },
    )
    assert reply["ok"] and reply["result"]["status"] == "revoked"

    said_good = await openssl_ocsp(tmp_path, service, ca, good)
    assert "leaf.pem: good" in said_good and "Response verify OK" in said_good
    assert "WARNING" not in said_good  # the nonce openssl sent came back
    said_revoked = await openssl_ocsp(tmp_path, service, ca, bad)
    assert "leaf.pem: revoked" in said_revoked and "Reason: keyCompromise" in said_revoked
    said_unknown = await openssl_ocsp(tmp_path, service, ca, stranger)
    assert "leaf.pem: unknown" in said_unknown


async def test_a_response_is_signed_by_the_delegated_signer_and_echoes_the_nonce(
    service: RevocationService, nats_client, ca: LabCa
) -> None:
    cert = ca.issue("alice")
    await announce(nats_client, ca, cert)
    await rpc(
        nats_client,
        "revoke",
        {"id": format(cert.serial_number, "x"), "reason": 6, "comment": "on hold"},
    )
    response = await ask(service, ocsp_request(ca, cert, nonce=b"0123456789abcdef"))

    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason == x509.ReasonFlags.certificate_hold
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == (
        b"0123456789abcdef"
    )
    signer = response.certificates[0]
    signer.verify_directly_issued_by(ca.cert)
    assert (
        x509.ExtendedKeyUsageOID.OCSP_SIGNING
        in signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    signer.public_key().verify(  # type: ignore[call-arg]
        response.signature, response.tbs_response_bytes, ECDSA(response.signature_hash_algorithm)
    )
    assert response.next_update_utc > response.this_update_utc


async def test_a_cached_good_answer_turns_revoked_the_moment_the_revocation_lands(
    service: RevocationService, nats_client, ca: LabCa
) -> None:
    cert = ca.issue("bob")
    await announce(nats_client, ca, cert)
    request = ocsp_request(ca, cert)
    assert (await ask(service, request)).certificate_status == ocsp.OCSPCertStatus.GOOD
    assert (await ask(service, request)).certificate_status == ocsp.OCSPCertStatus.GOOD
    await rpc(
        nats_client,
        "revoke",
        {"serial": format(cert.serial_number, "x"), "reason": "superseded", "comment": "renewed"},
    )
    answer = await ask(service, request)
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.superseded


async def test_get_requests_work_and_foreign_or_garbled_requests_are_refused(
    service: RevocationService, nats_client, ca: LabCa
) -> None:
    cert = ca.issue("carol")
    await announce(nats_client, ca, cert)
    encoded = base64.b64encode(ocsp_request(ca, cert)).decode()
    foreign = LabCa("elsewhere")
    async with httpx.AsyncClient(base_url=service.public.url) as http:
        by_get = ocsp.load_der_ocsp_response((await http.get(f"/ocsp/{encoded}")).content)
        garbled = ocsp.load_der_ocsp_response(
            (await http.post("/ocsp", content=b"nonsense")).content
        )
    assert by_get.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert garbled.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    refused = await ask(service, ocsp_request(foreign, foreign.issue("x")))
    assert refused.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


async def test_the_signer_key_is_kept_encrypted_and_private_and_reused_after_a_restart(
    service: RevocationService, ca: LabCa
) -> None:
    keys = list((service.settings.var_dir / "revocation" / "ocsp").glob("*.key"))
    assert len(keys) == 1
    assert keys[0].stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in keys[0].read_bytes()
    first = service.keyring.get("corp")
    assert first is not None
    again = wire(service.settings).keyring
    reloaded = await again.ensure("corp", ca.cert)
    assert reloaded.certificate == first.certificate
