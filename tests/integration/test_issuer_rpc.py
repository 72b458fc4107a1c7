"""The issuer's request/reply operations over a real nats-server."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from services.issuer.app import build
from services.issuer.testing import csr_pem, issuer_settings, make_csr
from shared.bus import RpcError, make_broker, rpc_call
from shared.pki import load_certificate

pytestmark = pytest.mark.integration


@pytest.fixture
async def call(nats_url, nats_client, tmp_path):
    rt = build(issuer_settings(tmp_path, nats_url))
    await rt.app.start()
    client = make_broker(nats_url, "test-client")
    await client.start()

    async def _call(op: str, payload: dict) -> dict:
        return await rpc_call(client, "issuer", op, payload, timeout=10)

    yield _call
    await client.stop()
    await rt.app.stop()


async def test_a_delegated_ocsp_signer_is_signed_for_the_revocation_service(call) -> None:
    csr, _ = make_csr("issuing-ec OCSP responder")
    answer = await call("ocsp.signer", {"ca": "issuing-ec", "csr": csr_pem(csr)})
    cert = load_certificate(answer["certificate_pem"])
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.OCSP_SIGNING
    ]
    assert cert.extensions.get_extension_for_class(x509.OCSPNoCheck) is not None
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 31
    assert cert.public_key() == csr.public_key()
    cert.verify_directly_issued_by(load_certificate(answer["chain_pem"][0]))


async def test_an_ocsp_signer_for_an_unknown_ca_is_refused(call) -> None:
    csr, _ = make_csr("x")
    with pytest.raises(RpcError) as caught:
        await call("ocsp.signer", {"ca": "nope", "csr": csr_pem(csr)})
    assert caught.value.code == "unknown_ca" and caught.value.status == 404


async def test_a_certificate_issued_here_can_be_looked_up_by_serial(call) -> None:
    csr, _ = make_csr("alice", [x509.RFC822Name("alice@example.com")])
    issued = await call(
        "enroll.csr", {"template": "user-client", "csr": csr_pem(csr), "owner": "alice"}
    )
    found = await call("certs.get", {"id": issued["serial"]})
    assert found["id"] == issued["id"]
    with pytest.raises(RpcError) as caught:
        await call("certs.get", {"id": "deadbeef"})
    assert caught.value.code == "not_found"


async def test_a_root_ca_gets_a_delegated_ocsp_signer_too(call) -> None:
    csr, _ = make_csr("root OCSP responder")
    answer = await call("ocsp.signer", {"ca": "root", "csr": csr_pem(csr)})
    cert = load_certificate(answer["certificate_pem"])
    cert.verify_directly_issued_by(load_certificate(answer["chain_pem"][0]))
    assert answer["issuer_ca"] == "root"
