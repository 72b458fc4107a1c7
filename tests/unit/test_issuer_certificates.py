"""What the issuer signs: RFC 5280 profile, chains that independent verifiers accept."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from services.issuer.ca import open_hierarchy, select_cas
from services.issuer.issuance import Enrollment, Issuer, issued_fields
from services.issuer.settings import REPO_ROOT
from services.issuer.templates import TemplateCatalog
from services.issuer.testing import csr_pem, make_csr, user_csr
from shared.clock import FixedClock
from shared.pki import pem

BASE = "http://pki.test"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cas(tmp_path_factory):
    return open_hierarchy(
        tmp_path_factory.mktemp("keys"),
        b"unit-test-passphrase",
        select_cas(["issuing-ec"]),
        BASE,
        FixedClock(NOW),
    )


@pytest.fixture(scope="module")
def issuer(cas):
    return Issuer(cas, TemplateCatalog(REPO_ROOT / "infra/templates.yaml"), BASE, FixedClock(NOW))


def issue(issuer, csr: str, template: str = "user-client", owner: str | None = "alice", **kw):
    req = Enrollment(request_id="r", template=template, csr=csr, owner=owner, **kw)
    leaf = issuer.prepare(req)
    return issuer.sign(leaf, x509.random_serial_number()), leaf, req


def test_a_user_client_certificate_carries_exactly_the_profiles_extensions(issuer) -> None:
    cert, _, _ = issue(issuer, user_csr("alice"))
    oids = {ext.oid for ext in cert.extensions}
    assert oids == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        ExtensionOID.FRESHEST_CRL,
    }
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_encipherment
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]


def test_public_urls_point_at_the_issuing_cas_crl_ocsp_and_certificate(issuer) -> None:
    cert, _, _ = issue(issuer, user_csr("alice"))
    [dp] = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for n in dp.full_name] == [f"{BASE}/crl/issuing-ec.crl"]
    [fresh] = cert.extensions.get_extension_for_class(x509.FreshestCRL).value
    assert [n.value for n in fresh.full_name] == [f"{BASE}/crl/issuing-ec-delta.crl"]
    aia = {
        d.access_method: d.access_location.value
        for d in cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    }
    assert aia[x509.AuthorityInformationAccessOID.OCSP] == f"{BASE}/ocsp"
    assert aia[x509.AuthorityInformationAccessOID.CA_ISSUERS] == f"{BASE}/ca/issuing-ec.crt"


def test_key_identifiers_link_the_leaf_to_its_issuing_ca(issuer, cas) -> None:
    cert, _, _ = issue(issuer, user_csr("alice"))
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == cas.get("issuing-ec").ski().digest
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def test_serials_are_positive_random_and_at_least_64_bits(issuer) -> None:
    serials = {issue(issuer, user_csr("alice"))[0].serial_number for _ in range(20)}
    assert len(serials) == 20
    assert all(s > 0 and s.bit_length() >= 64 for s in serials)


def test_validity_is_utc_backdated_a_little_and_as_long_as_the_template_says(issuer) -> None:
    cert, _, _ = issue(issuer, user_csr("alice"))
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=365)


def test_validity_never_runs_past_the_issuing_cas(cas) -> None:
    late = Issuer(
        cas,
        TemplateCatalog(REPO_ROOT / "infra/templates.yaml"),
        BASE,
        FixedClock(cas.get("issuing-ec").certificate.not_valid_after_utc - timedelta(days=10)),
    )
    cert, _, _ = issue(late, user_csr("alice"))
    assert cert.not_valid_after_utc == cas.get("issuing-ec").certificate.not_valid_after_utc


def test_openssl_verifies_the_chain_for_client_authentication(issuer, tmp_path: Path) -> None:
    cert, leaf, req = issue(issuer, user_csr("alice"))
    fields = issued_fields(cert, leaf, req)
    (tmp_path / "leaf.pem").write_text(fields["certificate_pem"])
    (tmp_path / "issuing.pem").write_text(fields["chain_pem"][0])
    (tmp_path / "root.pem").write_text(fields["chain_pem"][1])
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslclient",
            "-attime",
            str(int(NOW.timestamp()) + 60),
            "-CAfile",
            "root.pem",
            "-untrusted",
            "issuing.pem",
            "leaf.pem",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "leaf.pem: OK" in result.stdout, result.stderr


def test_cryptographys_path_verifier_accepts_the_client_certificate(issuer, cas) -> None:
    cert, _, _ = issue(issuer, user_csr("alice"))
    store = verification.Store([cas.get("root").certificate])
    verifier = (
        verification.PolicyBuilder()
        .store(store)
        .time(NOW + timedelta(minutes=1))
        .build_client_verifier()
    )
    verified = verifier.verify(cert, [cas.get("issuing-ec").certificate])
    assert verified.chain[-1] == cas.get("root").certificate
    assert x509.RFC822Name("alice@example.com") in verified.subjects


def test_cryptographys_path_verifier_accepts_a_tls_server_certificate_for_its_name(
    issuer, cas
) -> None:
    csr, _ = make_csr("www.example.com", [x509.DNSName("www.example.com")])
    cert, _, _ = issue(issuer, csr_pem(csr), template="tls-server", owner=None)
    store = verification.Store([cas.get("root").certificate])
    verifier = (
        verification.PolicyBuilder()
        .store(store)
        .time(NOW + timedelta(minutes=1))
        .build_server_verifier(x509.DNSName("www.example.com"))
    )
    chain = verifier.verify(cert, [cas.get("issuing-ec").certificate])
    assert chain[0] == cert


def test_the_issuing_ca_is_a_constrained_ca_under_the_root(cas) -> None:
    issuing = cas.get("issuing-ec").certificate
    bc = issuing.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    ku = issuing.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    issuing.verify_directly_issued_by(cas.get("root").certificate)
    assert issuing.not_valid_after_utc <= cas.get("root").certificate.not_valid_after_utc


def test_issued_fields_describe_the_certificate(issuer) -> None:
    cert, leaf, req = issue(issuer, user_csr("alice"))
    fields = issued_fields(cert, leaf, req)
    assert fields["certificate_pem"] == pem(cert)
    assert fields["serial"] == format(cert.serial_number, "x")
    assert fields["key_type"] == "EC-secp256r1" and fields["key_size"] == 256
    assert fields["signature_algorithm"] == "ecdsa-with-SHA256"
