"""Importing an existing CA: checked, kept encrypted, and issuing under its own chain."""

from __future__ import annotations

import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from services.issuer.admin import app as admin
from services.issuer.ca import (
    CaSpec,
    CertificateAuthority,
    build_ca_certificate,
    key_path,
    open_hierarchy,
    select_cas,
)
from services.issuer.importca import import_ca
from services.issuer.issuance import Enrollment, Issuer
from services.issuer.settings import REPO_ROOT
from services.issuer.signer import KeySigner
from services.issuer.templates import TemplateCatalog
from services.issuer.testing import make_key, user_csr
from shared.pki import pem


class External:
    """Someone else's CA hierarchy: a root and an issuing CA, keys in memory."""

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.root_key, self.ca_key = make_key("ec-p384"), make_key("ec-p256")
        root_signer = KeySigner(self.root_key)
        self.root = build_ca_certificate(
            CaSpec("ext-root", "ec-p384", 3650, None, "Ext Root"),
            root_signer,
            None,
            "http://ext.test",
            now,
        )
        parent = CertificateAuthority("ext-root", self.root, root_signer)
        self.ca = build_ca_certificate(
            CaSpec("legacy", "ec-p256", 1000, "ext-root", "Legacy CA"),
            KeySigner(self.ca_key),
            parent,
            "http://ext.test",
            now,
        )

    def key_pem(self, password: bytes | None = None) -> bytes:
        enc = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, enc
        )


@pytest.fixture(scope="module")
def external() -> External:
    return External()


def test_an_imported_ca_issues_certificates_that_chain_to_its_own_root(
    external: External, tmp_path: Path
) -> None:
    import_ca(
        tmp_path,
        b"ours",
        "legacy",
        pem(external.ca).encode(),
        pem(external.root).encode(),
        external.key_pem(b"theirs"),
        b"theirs",
    )
    assert key_path(tmp_path, "legacy").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    assert stat.S_IMODE(key_path(tmp_path, "legacy").stat().st_mode) == 0o600
    cas = open_hierarchy(tmp_path, b"ours", select_cas(["issuing-ec"]), "http://pki.test")
    legacy = cas.get("legacy")
    assert not legacy.is_root and legacy.chain() == [external.ca, external.root]
    issuer = Issuer(cas, TemplateCatalog(REPO_ROOT / "infra/templates.yaml"), "http://pki.test")
    cert = issuer.sign(
        issuer.prepare(
            Enrollment("r", "user-client", user_csr("alice"), owner="alice", ca="legacy")
        ),
        x509.random_serial_number(),
    )
    (tmp_path / "leaf.pem").write_text(pem(cert))
    (tmp_path / "ca.pem").write_text(pem(external.ca))
    (tmp_path / "root.pem").write_text(pem(external.root))
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "ca.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_key_that_does_not_match_the_certificate_is_refused(
    external: External, tmp_path: Path
) -> None:
    other = make_key("ec-p256").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="does not belong"):
        import_ca(
            tmp_path,
            b"ours",
            "legacy",
            pem(external.ca).encode(),
            pem(external.root).encode(),
            other,
        )


def test_a_leaf_certificate_cannot_be_imported_as_a_ca(external: External, tmp_path: Path) -> None:
    cas = open_hierarchy(tmp_path / "k", b"x", select_cas(["issuing-ec"]), "http://pki.test")
    issuer = Issuer(cas, TemplateCatalog(REPO_ROOT / "infra/templates.yaml"), "http://pki.test")
    key = make_key("ec-p256")
    leaf = issuer.sign(
        issuer.prepare(Enrollment("r", "user-client", user_csr("bob", key=key), owner="bob")),
        x509.random_serial_number(),
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="not a CA"):
        import_ca(tmp_path, b"ours", "leaf", pem(leaf).encode(), b"", key_pem)


def test_a_chain_that_does_not_link_up_is_refused(external: External, tmp_path: Path) -> None:
    stranger = External()
    with pytest.raises(Exception):  # noqa: B017 - cryptography raises its own signature errors
        import_ca(
            tmp_path,
            b"ours",
            "legacy",
            pem(external.ca).encode(),
            pem(stranger.root).encode(),
            external.key_pem(),
        )


def test_the_admin_command_imports_with_a_key_file(
    external: External, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CERTBUS_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CERTBUS_CA_PASSPHRASE", "admin-test")
    (tmp_path / "ca.pem").write_text(pem(external.ca))
    (tmp_path / "root.pem").write_text(pem(external.root))
    (tmp_path / "ca.key").write_bytes(external.key_pem())
    ok = CliRunner().invoke(
        admin,
        [
            "import-ca",
            "--name",
            "legacy",
            "--cert",
            str(tmp_path / "ca.pem"),
            "--chain",
            str(tmp_path / "root.pem"),
            "--key",
            str(tmp_path / "ca.key"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    again = CliRunner().invoke(
        admin,
        [
            "import-ca",
            "--name",
            "legacy",
            "--cert",
            str(tmp_path / "ca.pem"),
            "--key",
            str(tmp_path / "ca.key"),
        ],
    )
    assert again.exit_code == 2 and "already exists" in again.output
    assert (tmp_path / "var" / "issuer" / "keys" / "legacy.crt.pem").exists()
