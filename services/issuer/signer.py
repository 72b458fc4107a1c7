"""The small interface through which a CA key signs, and the file-backed implementation.

A signer signs certificates and CRLs without handing out its key; the PKCS#11 backend
implements the same methods with the key inside an HSM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

from services.issuer.settings import write_secret


class Signer(Protocol):
    def public_key(self) -> CertificateIssuerPublicKeyTypes: ...

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate: ...

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList: ...


def hash_for(key: object) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None:
    """The digest a key signs with: none for EdDSA and ML-DSA, SHA-384 or more for big curves."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return None
    if isinstance(key, ed448.Ed448PrivateKey | ed448.Ed448PublicKey):
        return None
    if _is_mldsa(key):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        size = key.curve.key_size
        return hashes.SHA512() if size > 384 else hashes.SHA384() if size > 256 else hashes.SHA256()
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and key.key_size >= 4096:
        return hashes.SHA384()
    return hashes.SHA256()


def _is_mldsa(key: object) -> bool:
    return isinstance(
        key,
        mldsa.MLDSA44PrivateKey
        | mldsa.MLDSA65PrivateKey
        | mldsa.MLDSA87PrivateKey
        | mldsa.MLDSA44PublicKey
        | mldsa.MLDSA65PublicKey
        | mldsa.MLDSA87PublicKey,
    )


class KeySigner:
    """Signs with a private key held in memory, loaded from an encrypted PKCS#8 file."""

    def __init__(self, key: CertificateIssuerPrivateKeyTypes) -> None:
        self._key = key

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._key.public_key()

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self._key, hash_for(self._key))  # type: ignore[arg-type]

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        return builder.sign(self._key, hash_for(self._key))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"KeySigner({type(self._key).__name__})"


def save_encrypted_key(
    path: Path, key: CertificateIssuerPrivateKeyTypes, passphrase: bytes
) -> None:
    """Write the key as encrypted PKCS#8 (PBES2, AES-256), readable only by its owner."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    write_secret(path, data)


def load_encrypted_key(path: Path, passphrase: bytes) -> CertificateIssuerPrivateKeyTypes:
    key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    return key  # type: ignore[return-value]
