"""Keys made on the machine and the CSRs that carry their public halves."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from services.agent.errors import JobError

KEY_TYPES = ("ec-p256", "ec-p384", "ec-p521", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519")


def generate(key_type: str) -> PrivateKeyTypes:
    kind = key_type.lower().replace("_", "-")
    if kind in ("ec-p256", "ec", "p256", "ecdsa-p256"):
        return ec.generate_private_key(ec.SECP256R1())
    if kind in ("ec-p384", "p384"):
        return ec.generate_private_key(ec.SECP384R1())
    if kind in ("ec-p521", "p521"):
        return ec.generate_private_key(ec.SECP521R1())
    if kind.startswith("rsa"):
        bits = int(kind.split("-", 1)[1]) if "-" in kind else 2048
        if bits < 2048:
            raise JobError("weak_key", f"RSA keys must have at least 2048 bits, not {bits}")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise JobError("unsupported_key_type", f"key type {key_type!r} is not one of {KEY_TYPES}")


def to_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load(path: Path) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def pending_key(root: Path, request_id: str, key_type: str) -> PrivateKeyTypes:
    """The key waiting for ``request_id``'s certificate: reused if it exists, made otherwise."""
    path = pending_path(root, request_id)
    if path.exists():
        return load(path)
    key = generate(key_type)
    write_private(path, to_pem(key))
    return key


def pending_path(root: Path, request_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in request_id)
    return root / ".certbus" / "pending" / f"{safe}.key"


def parse_san(text: str) -> x509.GeneralName:
    kind, _, value = text.partition(":")
    kind = kind.strip().lower()
    if not value:
        raise JobError("invalid_san", f"SAN {text!r} is not kind:value")
    if kind in ("email", "rfc822"):
        return x509.RFC822Name(value)
    if kind == "dns":
        return x509.DNSName(value)
    if kind == "uri":
        return x509.UniformResourceIdentifier(value)
    if kind == "ip":
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError as exc:
            raise JobError("invalid_san", f"{value!r} is not an IP address") from exc
    raise JobError("invalid_san", f"SAN kind {kind!r} is not email, dns, uri or ip")


def build_csr(
    key: PrivateKeyTypes, subject_dn: str, sans: list[str]
) -> x509.CertificateSigningRequest:
    try:
        name = x509.Name.from_rfc4514_string(subject_dn)
    except ValueError as exc:
        raise JobError("invalid_subject", f"subject {subject_dn!r} is not an RFC 4514 DN") from exc
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([parse_san(s) for s in sans]), critical=False
        )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)  # type: ignore[arg-type]


def public_der(key_or_cert: object) -> bytes:
    public = key_or_cert.public_key()  # type: ignore[attr-defined]
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def matches(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    return public_der(key) == public_der(cert)
