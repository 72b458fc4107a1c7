"""Helpers for tests and benchmarks: CSRs of every kind, and an issuer wired to a test bus."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from services.issuer.settings import IssuerSettings
from services.issuer.signer import hash_for


def make_key(kind: str = "ec-p256") -> Any:
    from services.issuer.keys import generate_key

    if kind == "rsa-1024":  # only tests want a key this weak
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    if kind == "ec-secp256k1":
        return ec.generate_private_key(ec.SECP256K1())
    return generate_key(kind)


def make_csr(
    cn: str | None = "alice",
    sans: list[x509.GeneralName] | None = None,
    key: Any = None,
    extra: list[tuple[x509.ExtensionType, bool]] | None = None,
    attributes: list[x509.NameAttribute] | None = None,
) -> tuple[x509.CertificateSigningRequest, Any]:
    key = key if key is not None else make_key()
    names = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name(names + (attributes or []))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext, critical in extra or []:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(key, hash_for(key)), key


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def user_csr(user: str = "alice", domain: str = "example.com", key: Any = None) -> str:
    csr, _ = make_csr(user, [x509.RFC822Name(f"{user}@{domain}")], key=key)
    return csr_pem(csr)


def tampered(csr: x509.CertificateSigningRequest) -> str:
    """The same CSR with one byte of its signature flipped: proof of possession fails."""
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01
    import base64

    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


def issuer_settings(
    tmp: Path, nats_url: str, database_url: str | None = None, **overrides: Any
) -> IssuerSettings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "var_dir": tmp / "var",
        "issuer_database_url": database_url or f"sqlite+aiosqlite:///{tmp / 'issuer.db'}",
        "ca_passphrase": secrets.token_urlsafe(16),
        "issuer_cas": ["issuing-ec"],
        "public_base_url": "http://pki.test",
        "crl_debounce_seconds": 0.2,
        "crl_max_delay_seconds": 1.0,
        "max_deliver": 3,
    }
    values.update(overrides)
    return IssuerSettings(**values)


SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def softhsm_token(tmp: Path, label: str = "certbus-test") -> Any:
    """A fresh SoftHSM2 token in ``tmp`` (SOFTHSM2_CONF points at it for this process)."""
    import os
    import shutil
    import subprocess

    from services.issuer.pkcs11signer import HsmConfig

    if not (Path(SOFTHSM_MODULE).exists() and shutil.which("softhsm2-util")):
        raise FileNotFoundError("SoftHSM2 is not installed (Debian package softhsm2)")
    tokens = tmp / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = tmp / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin = secrets.token_hex(8)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            secrets.token_hex(8),
        ],
        check=True,
        capture_output=True,
    )
    return HsmConfig(SOFTHSM_MODULE, label, pin)
