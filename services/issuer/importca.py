"""Importing an existing CA: its certificate and chain, and its key as a file or on a token.

The imported CA is checked (a CA certificate, the key matches, the chain links up) and then
kept like a created one: the key re-encrypted under this issuer's passphrase (or left on the
token), the certificate and its issuers' certificates in a manifest next to the keys.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.issuer.ca import MANIFEST, KeyStore, cert_path, imported_entries, key_path
from services.issuer.signer import save_encrypted_key
from shared.pki import pem


def check_ca_certificate(cert: x509.Certificate, chain: list[x509.Certificate]) -> None:
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    if not bc.ca or not ku.key_cert_sign:
        raise ValueError(
            "not a CA certificate: basicConstraints CA:TRUE and keyCertSign are required"
        )
    if cert.not_valid_after_utc <= datetime.now(UTC):
        raise ValueError("the CA certificate has expired")
    for child, parent in zip([cert, *chain], chain, strict=False):
        child.verify_directly_issued_by(parent)


def import_ca(
    key_dir: Path,
    passphrase: bytes,
    name: str,
    certificate_pem: bytes,
    chain_pem: bytes = b"",
    key_pem: bytes | None = None,
    key_password: bytes | None = None,
    hsm: KeyStore | None = None,
) -> None:
    """Add CA ``name``: the key from ``key_pem`` (re-encrypted) or from ``hsm``."""
    if cert_path(key_dir, name).exists():
        raise ValueError(f"a CA named {name!r} already exists")
    cert = x509.load_pem_x509_certificate(certificate_pem)
    chain = x509.load_pem_x509_certificates(chain_pem) if chain_pem.strip() else []
    check_ca_certificate(cert, chain)
    key_dir.mkdir(parents=True, exist_ok=True)
    if key_pem is not None:
        key = serialization.load_pem_private_key(key_pem, password=key_password)
        if key.public_key() != cert.public_key():
            raise ValueError("the private key does not belong to the CA certificate")
        save_encrypted_key(key_path(key_dir, name), key, passphrase)  # type: ignore[arg-type]
        backend = "file"
    else:
        if hsm is None or not hsm.exists(name):
            raise ValueError(f"no key labelled {name!r} on the token, and no key file given")
        if hsm.load(name).public_key() != cert.public_key():
            raise ValueError("the token's key does not belong to the CA certificate")
        backend = hsm.backend
    cert_path(key_dir, name).write_bytes(pem(cert).encode())
    entries = [e for e in imported_entries(key_dir) if e["name"] != name]
    entries.append({"name": name, "backend": backend, "chain_pem": [pem(c) for c in chain]})
    (key_dir / MANIFEST).write_text(json.dumps(entries, indent=2))
