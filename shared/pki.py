"""The single place that renders serials, computes thumbprints and maps revocation reasons."""

from __future__ import annotations

import hashlib
from enum import IntEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa


class RevocationReason(IntEnum):
    """RFC 5280 CRLReason codes (7 is unused by the RFC)."""

    UNSPECIFIED = 0
    KEY_COMPROMISE = 1
    CA_COMPROMISE = 2
    AFFILIATION_CHANGED = 3
    SUPERSEDED = 4
    CESSATION_OF_OPERATION = 5
    CERTIFICATE_HOLD = 6
    REMOVE_FROM_CRL = 8
    PRIVILEGE_WITHDRAWN = 9
    AA_COMPROMISE = 10

    @property
    def rfc_name(self) -> str:
        return _RFC_NAMES[self]

    @property
    def x509_flag(self) -> x509.ReasonFlags:
        return _X509_FLAGS[self]

    @classmethod
    def parse(cls, value: str | int) -> RevocationReason:
        """Accept a number (``5``), an RFC name (``cessationOfOperation``) or an enum name."""
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            return cls(int(value))
        key = value.strip().replace("_", "").replace("-", "").lower()
        for member in cls:
            if key in (member.rfc_name.lower(), member.name.replace("_", "").lower()):
                return member
        raise ValueError(f"unknown revocation reason {value!r}")

    @classmethod
    def from_x509(cls, flag: x509.ReasonFlags | None) -> RevocationReason:
        if flag is None:
            return cls.UNSPECIFIED
        return next(member for member, f in _X509_FLAGS.items() if f == flag)


_RFC_NAMES = {
    RevocationReason.UNSPECIFIED: "unspecified",
    RevocationReason.KEY_COMPROMISE: "keyCompromise",
    RevocationReason.CA_COMPROMISE: "cACompromise",
    RevocationReason.AFFILIATION_CHANGED: "affiliationChanged",
    RevocationReason.SUPERSEDED: "superseded",
    RevocationReason.CESSATION_OF_OPERATION: "cessationOfOperation",
    RevocationReason.CERTIFICATE_HOLD: "certificateHold",
    RevocationReason.REMOVE_FROM_CRL: "removeFromCRL",
    RevocationReason.PRIVILEGE_WITHDRAWN: "privilegeWithdrawn",
    RevocationReason.AA_COMPROMISE: "aACompromise",
}

_X509_FLAGS = {
    RevocationReason.UNSPECIFIED: x509.ReasonFlags.unspecified,
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.CA_COMPROMISE: x509.ReasonFlags.ca_compromise,
    RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.CERTIFICATE_HOLD: x509.ReasonFlags.certificate_hold,
    RevocationReason.REMOVE_FROM_CRL: x509.ReasonFlags.remove_from_crl,
    RevocationReason.PRIVILEGE_WITHDRAWN: x509.ReasonFlags.privilege_withdrawn,
    RevocationReason.AA_COMPROMISE: x509.ReasonFlags.aa_compromise,
}


def render_serial(serial: int) -> str:
    """Serials are rendered as lower-case hex without separators, everywhere."""
    return format(serial, "x")


def parse_serial(text: str) -> int:
    return int(text.replace(":", "").strip(), 16)


def thumbprint(cert: x509.Certificate, algorithm: str = "sha256") -> str:
    digest = hashes.SHA1() if algorithm == "sha1" else hashes.SHA256()
    return cert.fingerprint(digest).hex()


def public_key_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the SubjectPublicKeyInfo: identifies a key across certificates."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def describe_key(public_key: object) -> tuple[str, int | None]:
    """A key's type name and size (bits, or curve size), as the catalog shows them."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA", public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC-{public_key.curve.name}", public_key.curve.key_size
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448", 456
    if isinstance(public_key, dsa.DSAPublicKey):
        return "DSA", public_key.key_size
    name = type(public_key).__name__
    if "MLDSA" in name.upper():
        return name.replace("PublicKey", "").upper().replace("MLDSA", "ML-DSA-"), None
    return name, None


def signature_algorithm_name(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    return getattr(oid, "_name", None) or oid.dotted_string


def load_certificate(data: str | bytes) -> x509.Certificate:
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" in raw:
        return x509.load_pem_x509_certificate(raw)
    return x509.load_der_x509_certificate(raw)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()
