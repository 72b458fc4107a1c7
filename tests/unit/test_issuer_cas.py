"""The CA hierarchy: created once, kept encrypted on disk, reused on the next start."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from services.issuer.ca import key_path, open_hierarchy, select_cas
from services.issuer.settings import IssuerSettings
from shared.pki import describe_key


def test_first_start_creates_a_p384_root_and_a_p256_issuing_ca(tmp_path: Path) -> None:
    cas = open_hierarchy(tmp_path, b"pw-1", select_cas(["issuing-ec"]), "http://pki.test")
    assert [c.name for c in cas.all()] == ["root", "issuing-ec"]
    assert describe_key(cas.get("root").certificate.public_key()) == ("EC-secp384r1", 384)
    assert describe_key(cas.get("issuing-ec").certificate.public_key()) == ("EC-secp256r1", 256)
    root = cas.get("root").certificate
    assert (root.not_valid_after_utc - root.not_valid_before_utc).days >= 3650
    assert all(c.created for c in cas.all())


def test_keys_are_encrypted_pkcs8_files_only_the_owner_can_read(tmp_path: Path) -> None:
    open_hierarchy(tmp_path, b"pw-2", select_cas(["issuing-ec"]), "http://pki.test")
    data = key_path(tmp_path, "issuing-ec").read_bytes()
    assert (
        data.split(b"\n", 1)[0].strip(b"-") == b"BEGIN ENCRYPTED PRIVATE KEY"
    )  # PKCS#8, encrypted
    assert stat.S_IMODE(key_path(tmp_path, "issuing-ec").stat().st_mode) == 0o600
    with pytest.raises((TypeError, ValueError)):
        serialization.load_pem_private_key(data, password=None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(data, password=b"wrong")


def test_a_second_start_reuses_the_same_cas(tmp_path: Path) -> None:
    first = open_hierarchy(tmp_path, b"pw-3", select_cas(["issuing-ec"]), "http://pki.test")
    second = open_hierarchy(tmp_path, b"pw-3", select_cas(["issuing-ec"]), "http://pki.test")
    assert not any(c.created for c in second.all())
    assert [c.certificate for c in second.all()] == [c.certificate for c in first.all()]


def test_every_issuing_algorithm_gets_a_ca_chained_to_its_root(tmp_path: Path) -> None:
    cas = open_hierarchy(tmp_path, b"pw-4", select_cas([]), "http://pki.test")
    kinds = {c.name: c.key_type for c in cas.issuing()}
    assert kinds == {
        "issuing-ec": "ec-p256",
        "issuing-rsa": "rsa-3072",
        "issuing-ed25519": "ed25519",
        "issuing-mldsa": "ml-dsa-65",
    }
    for ca in cas.issuing():
        ca.certificate.verify_directly_issued_by(ca.parent.certificate)


def test_without_a_configured_passphrase_one_is_generated_privately_and_kept(
    tmp_path: Path,
) -> None:
    settings = IssuerSettings(var_dir=tmp_path)
    first = settings.passphrase()
    path = tmp_path / "issuer" / "ca-passphrase"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) >= 32
    assert IssuerSettings(var_dir=tmp_path).passphrase() == first


def test_the_passphrase_can_come_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    assert (
        IssuerSettings(var_dir=tmp_path, ca_passphrase_file=secret).passphrase() == b"from-a-file"
    )
