"""Every shipped template issues exactly the extensions it promises, on the CA it names."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU
from cryptography.x509.oid import ExtensionOID as X
from cryptography.x509.oid import NameOID

from services.issuer.ca import open_hierarchy, select_cas
from services.issuer.issuance import Enrollment, Issuer
from services.issuer.settings import REPO_ROOT
from services.issuer.templates import TemplateCatalog, load_templates
from services.issuer.testing import csr_pem, make_csr, make_key
from shared.clock import FixedClock
from shared.pki import pem

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
COMMON = {
    X.BASIC_CONSTRAINTS,
    X.KEY_USAGE,
    X.SUBJECT_KEY_IDENTIFIER,
    X.AUTHORITY_KEY_IDENTIFIER,
    X.CRL_DISTRIBUTION_POINTS,
    X.AUTHORITY_INFORMATION_ACCESS,
    X.FRESHEST_CRL,
}

CASES = {
    # template: (key, subject, SANs, owner/device, EKU, key usages, verifier)
    "user-client": (
        "ec-p256",
        "alice",
        [x509.RFC822Name("alice@example.com")],
        {"owner": "alice"},
        [EKU.CLIENT_AUTH],
        {"digital_signature"},
        "client",
    ),
    "tls-server": (
        "ec-p384",
        "www.example.com",
        [x509.DNSName("www.example.com")],
        {},
        [EKU.SERVER_AUTH],
        {"digital_signature", "key_encipherment"},
        "server",
    ),
    "machine-client": (
        "rsa-2048",
        "pc-17.internal",
        [x509.DNSName("pc-17.internal")],
        {"device": "pc-17.internal"},
        [EKU.CLIENT_AUTH],
        {"digital_signature"},
        "client",
    ),
    "code-signing": ("ec-p384", "release", [], {}, [EKU.CODE_SIGNING], {"digital_signature"}, None),
    "tls-server-pq": (
        "ml-dsa-65",
        "pq.example.com",
        [x509.DNSName("pq.example.com")],
        {},
        [EKU.SERVER_AUTH],
        {"digital_signature"},
        "server",
    ),
}


@pytest.fixture(scope="module")
def cas(tmp_path_factory):
    return open_hierarchy(
        tmp_path_factory.mktemp("keys"),
        b"templates",
        select_cas([]),
        "http://pki.test",
        FixedClock(NOW),
    )


@pytest.fixture(scope="module")
def issuer(cas):
    return Issuer(
        cas, TemplateCatalog(REPO_ROOT / "infra/templates.yaml"), "http://pki.test", FixedClock(NOW)
    )


def issue(issuer, name: str) -> x509.Certificate:
    key, cn, sans, who, *_ = CASES[name]
    attributes = (
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example")] if name == "code-signing" else []
    )
    csr, _ = make_csr(cn, sans, key=make_key(key), attributes=attributes)
    req = Enrollment("r", name, csr_pem(csr), metadata={"approved_by": "cab"}, **who)
    return issuer.sign(issuer.prepare(req), x509.random_serial_number())


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_template_issues_exactly_its_extensions(issuer, name: str) -> None:
    cert = issue(issuer, name)
    _, _, sans, _, eku, usages, _ = CASES[name]
    expected = COMMON | {X.EXTENDED_KEY_USAGE} | ({X.SUBJECT_ALTERNATIVE_NAME} if sans else set())
    assert {e.oid for e in cert.extensions} == expected
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == eku
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    flags = {
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
    }
    assert {f for f in flags if getattr(ku, f)} == usages


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_template_chains_to_its_ca_for_cryptographys_verifier(issuer, cas, name: str) -> None:
    cert = issue(issuer, name)
    ca = cas.get(load_templates(REPO_ROOT / "infra/templates.yaml")[name].ca)
    cert.verify_directly_issued_by(ca.certificate)
    kind = CASES[name][-1]
    if kind is None:
        return
    builder = (
        verification.PolicyBuilder()
        .store(verification.Store([ca.parent.certificate]))
        .time(NOW + timedelta(minutes=1))
    )
    if kind == "server":
        verifier = builder.build_server_verifier(x509.DNSName(CASES[name][1]))
        assert verifier.verify(cert, [ca.certificate])[0] == cert
    else:
        assert builder.build_client_verifier().verify(cert, [ca.certificate]).chain[0] == cert


@pytest.mark.parametrize(
    ("name", "purpose"),
    [
        ("user-client", "sslclient"),
        ("tls-server", "sslserver"),
        ("machine-client", "sslclient"),
        ("code-signing", "any"),
    ],
)
def test_openssl_verifies_each_classical_template_for_its_purpose(
    issuer, cas, tmp_path: Path, name: str, purpose: str
) -> None:
    cert = issue(issuer, name)
    ca = cas.get(load_templates(REPO_ROOT / "infra/templates.yaml")[name].ca)
    (tmp_path / "leaf.pem").write_text(pem(cert))
    (tmp_path / "issuing.pem").write_text(pem(ca.certificate))
    (tmp_path / "root.pem").write_text(pem(ca.parent.certificate))
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            purpose,
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
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_ed25519_issuing_ca_signs_certificates_openssl_accepts(
    cas, issuer, tmp_path: Path
) -> None:
    csr, _ = make_csr("pc-9.internal", [x509.DNSName("pc-9.internal")], key=make_key("ed25519"))
    req = Enrollment(
        "r", "machine-client", csr_pem(csr), device="pc-9.internal", ca="issuing-ed25519"
    )
    cert = issuer.sign(issuer.prepare(req), x509.random_serial_number())
    ca = cas.get("issuing-ed25519")
    (tmp_path / "leaf.pem").write_text(pem(cert))
    (tmp_path / "issuing.pem").write_text(pem(ca.certificate))
    (tmp_path / "root.pem").write_text(pem(ca.parent.certificate))
    result = subprocess.run(
        [
            "openssl",
            "verify",
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
    assert result.returncode == 0, result.stdout + result.stderr
    assert cert.signature_algorithm_oid.dotted_string == "1.3.101.112"


def test_a_broken_template_edit_keeps_the_previous_templates(tmp_path: Path) -> None:
    path = tmp_path / "templates.yaml"
    path.write_text((REPO_ROOT / "infra/templates.yaml").read_text())
    catalog = TemplateCatalog(path)
    path.write_text("templates:\n  broken:\n    ca: issuing-ec\n    validity_days: -1\n")
    os.utime(path, (1, 1))  # a new modification time, whatever the file system's resolution
    catalog.reload_if_changed()
    assert catalog.get("user-client") is not None and catalog.get("broken") is None
    path.write_text("templates:\n  only:\n    ca: issuing-ec\n    validity_days: 30\n")
    os.utime(path, (2, 2))
    catalog.reload_if_changed()
    assert [t.name for t in catalog.all()] == ["only"]
