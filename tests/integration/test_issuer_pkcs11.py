"""A CA whose key lives in SoftHSM2, behind the same signer interface as file keys."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from services.issuer import pkcs11signer
from services.issuer.ca import (
    CaSpec,
    CertificateAuthority,
    build_ca_certificate,
    open_hierarchy,
    select_cas,
)
from services.issuer.crl import CrlEntry, build_crl
from services.issuer.importca import import_ca
from services.issuer.issuance import Enrollment, Issuer
from services.issuer.pkcs11signer import generate_hsm_key
from services.issuer.settings import REPO_ROOT
from services.issuer.signer import KeySigner
from services.issuer.templates import TemplateCatalog
from services.issuer.testing import make_key, softhsm_token, user_csr
from shared.pki import RevocationReason, pem

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hsm(tmp_path_factory):
    try:
        config = softhsm_token(tmp_path_factory.mktemp("softhsm"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    session = pkcs11signer.open_session(config)
    yield pkcs11signer.HsmKeys(session)
    session.close()


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def cas(hsm, key_dir):
    return open_hierarchy(
        key_dir,
        b"pw",
        select_cas(["issuing-ec"]),
        "http://pki.test",
        hsm=hsm,
        hsm_cas=["issuing-ec"],
    )


def test_the_hsm_cas_key_is_on_the_token_and_not_on_disk(cas, key_dir: Path, hsm) -> None:
    assert cas.get("issuing-ec").backend == "pkcs11" and cas.get("root").backend == "file"
    assert hsm.exists("issuing-ec")
    assert not (key_dir / "issuing-ec.key.pem").exists()
    cas.get("issuing-ec").certificate.verify_directly_issued_by(cas.get("root").certificate)


def test_a_certificate_signed_in_the_hsm_passes_openssl_verify(cas, tmp_path: Path) -> None:
    issuer = Issuer(cas, TemplateCatalog(REPO_ROOT / "infra/templates.yaml"), "http://pki.test")
    leaf = issuer.prepare(Enrollment("r", "user-client", user_csr("alice"), owner="alice"))
    cert = issuer.sign(leaf, x509.random_serial_number())
    (tmp_path / "leaf.pem").write_text(pem(cert))
    (tmp_path / "issuing.pem").write_text(pem(cas.get("issuing-ec").certificate))
    (tmp_path / "root.pem").write_text(pem(cas.get("root").certificate))
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "issuing.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_crl_signed_in_the_hsm_verifies_with_the_ca_certificate(cas, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    crl = build_crl(
        cas.get("issuing-ec"),
        [CrlEntry(77, now, RevocationReason.KEY_COMPROMISE)],
        3,
        now,
        now + timedelta(days=1),
        "http://pki.test",
    )
    (tmp_path / "crl.der").write_bytes(crl.public_bytes(Encoding.DER))
    (tmp_path / "ca.pem").write_text(pem(cas.get("issuing-ec").certificate))
    result = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem", "-noout"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "verify OK" in result.stdout + result.stderr


def test_a_second_start_finds_the_same_key_on_the_token(cas, hsm, key_dir: Path) -> None:
    again = open_hierarchy(
        key_dir,
        b"pw",
        select_cas(["issuing-ec"]),
        "http://pki.test",
        hsm=hsm,
        hsm_cas=["issuing-ec"],
    )
    assert not again.get("issuing-ec").created
    assert (
        again.get("issuing-ec").signer.public_key()
        == cas.get("issuing-ec").certificate.public_key()
    )


def test_a_ca_whose_key_is_already_on_the_token_can_be_imported(hsm, tmp_path: Path) -> None:
    generate_hsm_key(hsm._session, "partner-ca", "ec-p256")  # noqa: SLF001 - the token's owner made it
    now = datetime.now(UTC)
    root_signer = KeySigner(make_key("ec-p384"))
    root = build_ca_certificate(
        CaSpec("partner-root", "ec-p384", 3650), root_signer, None, "http://x", now
    )
    parent = CertificateAuthority("partner-root", root, root_signer)
    ca_cert = build_ca_certificate(
        CaSpec("partner-ca", "ec-p256", 900, "partner-root"),
        hsm.load("partner-ca"),
        parent,
        "http://x",
        now,
    )
    import_ca(tmp_path, b"pw", "partner-ca", pem(ca_cert).encode(), pem(root).encode(), hsm=hsm)
    cas = open_hierarchy(tmp_path, b"pw", select_cas(["issuing-ec"]), "http://pki.test", hsm=hsm)
    partner = cas.get("partner-ca")
    assert partner.backend == "pkcs11" and partner.chain() == [ca_cert, root]
    issuer = Issuer(cas, TemplateCatalog(REPO_ROOT / "infra/templates.yaml"), "http://pki.test")
    cert = issuer.sign(
        issuer.prepare(
            Enrollment("r", "user-client", user_csr("zoe"), owner="zoe", ca="partner-ca")
        ),
        x509.random_serial_number(),
    )
    cert.verify_directly_issued_by(ca_cert)
