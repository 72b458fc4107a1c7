"""PKCS#12 for server-made keys: PBES2 with AES-256-CBC, an SHA-256 MAC, the chain included.

The password and the key exist only for the duration of the call that builds the file.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

KDF_ROUNDS = 100_000


def build_pkcs12(
    key: Any,
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    password: str,
    friendly_name: str,
) -> bytes:
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode())
    )
    return pkcs12.serialize_key_and_certificates(
        friendly_name.encode(),
        key,
        cert,
        chain,
        encryption,  # type: ignore[arg-type]
    )
