"""CSR and template policy: every refusal has a stable code and names the rule."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from services.issuer.ca import open_hierarchy, select_cas
from services.issuer.csr import parse_csr
from services.issuer.errors import Rejection
from services.issuer.issuance import Enrollment, Issuer
from services.issuer.settings import REPO_ROOT
from services.issuer.templates import TemplateCatalog
from services.issuer.testing import csr_pem, make_csr, make_key, tampered, user_csr


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    cas = open_hierarchy(
        tmp_path_factory.mktemp("keys"),
        b"unit-test-passphrase",
        select_cas(["issuing-ec", "issuing-rsa"]),
        "http://pki.test",
    )
    return Issuer(cas, TemplateCatalog(REPO_ROOT / "infra/templates.yaml"), "http://pki.test")


def refusal(
    issuer, csr: str | None, template: str = "user-client", owner: str | None = "alice", **kw
) -> Rejection:
    with pytest.raises(Rejection) as caught:
        issuer.prepare(Enrollment(request_id="r", template=template, csr=csr, owner=owner, **kw))
    return caught.value


def test_a_csr_whose_signature_does_not_verify_fails_proof_of_possession(issuer) -> None:
    csr, _ = make_csr("alice", [x509.RFC822Name("alice@example.com")])
    r = refusal(issuer, tampered(csr))
    assert r.code == "csr_signature_invalid" and "proof of possession" in r.message


def test_garbage_is_not_a_csr(issuer) -> None:
    assert refusal(issuer, "hello").code == "csr_malformed"


def test_rsa_1024_is_too_weak(issuer) -> None:
    csr, _ = make_csr("alice", [x509.RFC822Name("alice@example.com")], key=make_key("rsa-1024"))
    r = refusal(issuer, csr_pem(csr))
    assert r.code == "key_too_weak" and "rsa_min_bits" in r.message and "1024" in r.message


def test_rsa_2048_is_accepted_for_user_client(issuer) -> None:
    csr, _ = make_csr("alice", [x509.RFC822Name("alice@example.com")], key=make_key("rsa-2048"))
    assert (
        issuer.prepare(Enrollment("r", "user-client", csr_pem(csr), owner="alice")).key_type
        == "rsa-2048"
    )


def test_a_curve_the_template_does_not_list_is_refused(issuer) -> None:
    csr, _ = make_csr("alice", [x509.RFC822Name("alice@example.com")], key=make_key("ec-secp256k1"))
    r = refusal(issuer, csr_pem(csr))
    assert r.code == "curve_not_allowed" and "ec_curves" in r.message


def test_ed25519_is_refused_where_the_template_does_not_allow_it(issuer) -> None:
    csr, _ = make_csr("alice", [x509.RFC822Name("alice@example.com")], key=make_key("ed25519"))
    assert refusal(issuer, csr_pem(csr)).code == "key_type_not_allowed"


def test_a_request_for_a_ca_certificate_is_refused(issuer) -> None:
    csr, _ = make_csr(
        "alice",
        [x509.RFC822Name("alice@example.com")],
        extra=[(x509.BasicConstraints(ca=True, path_length=None), True)],
    )
    r = refusal(issuer, csr_pem(csr))
    assert r.code == "ca_request_refused" and "CA:TRUE" in r.message


def test_the_cn_must_be_the_requesting_user(issuer) -> None:
    r = refusal(issuer, user_csr("mallory"), owner="alice")
    assert r.code == "subject_requester_mismatch" and "from_requester.CN" in r.message


def test_a_subject_attribute_outside_the_template_is_refused(issuer) -> None:
    csr, _ = make_csr(
        "alice",
        [x509.RFC822Name("alice@example.com")],
        attributes=[x509.NameAttribute(NameOID.LOCALITY_NAME, "Paris")],
    )
    r = refusal(issuer, csr_pem(csr))
    assert r.code == "subject_attribute_not_allowed" and "L" in r.message


def test_a_subject_without_cn_is_refused(issuer) -> None:
    csr, _ = make_csr(None, [x509.RFC822Name("alice@example.com")])
    assert refusal(issuer, csr_pem(csr), owner=None).code == "subject_attribute_missing"


def test_a_dns_san_on_a_user_certificate_is_refused(issuer) -> None:
    csr, _ = make_csr("alice", [x509.DNSName("evil.example.com")])
    r = refusal(issuer, csr_pem(csr))
    assert r.code == "san_type_not_allowed" and "allowed_types" in r.message


def test_a_tls_server_name_outside_the_allowed_suffixes_is_refused(issuer) -> None:
    csr, _ = make_csr("www.evil.net", [x509.DNSName("www.evil.net")])
    r = refusal(issuer, csr_pem(csr), template="tls-server", owner=None)
    assert r.code == "san_dns_suffix_not_allowed" and "dns_suffixes" in r.message


def test_a_tls_server_cn_must_also_be_a_dns_san(issuer) -> None:
    csr, _ = make_csr("www.example.com", [x509.DNSName("api.example.com")])
    r = refusal(issuer, csr_pem(csr), template="tls-server", owner=None)
    assert r.code == "san_required" and "cn_in_dns" in r.message


def test_a_cn_that_breaks_the_templates_pattern_is_refused(issuer) -> None:
    csr, _ = make_csr("alice smith", [x509.RFC822Name("alice@example.com")])
    r = refusal(issuer, csr_pem(csr), owner=None)
    assert r.code == "subject_pattern_mismatch" and "patterns.CN" in r.message


def test_required_metadata_must_be_given(issuer) -> None:
    csr, _ = make_csr(
        "release",
        attributes=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ex")],
        key=make_key("ec-p384"),
    )
    r = refusal(issuer, csr_pem(csr), template="code-signing", owner=None)
    assert r.code == "metadata_missing" and "approved_by" in r.message
    leaf = issuer.prepare(
        Enrollment("r", "code-signing", csr_pem(csr), metadata={"approved_by": "cab"})
    )
    assert leaf.ca.name == "issuing-rsa"


def test_an_unknown_template_is_named(issuer) -> None:
    r = refusal(issuer, user_csr("alice"), template="nope")
    assert r.code == "unknown_template" and "nope" in r.message


def test_requested_extensions_other_than_sans_are_not_copied(issuer) -> None:
    csr, _ = make_csr(
        "alice", [x509.RFC822Name("alice@example.com")], extra=[(x509.OCSPNoCheck(), False)]
    )
    leaf = issuer.prepare(Enrollment("r", "user-client", csr_pem(csr), owner="alice"))
    cert = issuer.sign(leaf, x509.random_serial_number())
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.OCSPNoCheck)


@pytest.mark.parametrize("form", ["pem", "new-pem", "der-b64", "der"])
def test_csrs_are_read_in_the_forms_real_tools_write(form: str) -> None:
    csr, _ = make_csr("alice")
    der = csr.public_bytes(serialization.Encoding.DER)
    data: str | bytes = {
        "pem": csr_pem(csr),
        "new-pem": csr_pem(csr).replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"),
        "der-b64": base64.b64encode(der).decode(),
        "der": der,
    }[form]
    assert parse_csr(data) == csr
