"""A ``CertIssued`` event around a real certificate, for consumers' tests and benchmarks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared import pki
from shared.clock import utcnow
from shared.events import CertIssued, new_id

_CA_KEY = None


def _ca_key() -> ec.EllipticCurvePrivateKey:
    global _CA_KEY
    if _CA_KEY is None:
        _CA_KEY = ec.generate_private_key(ec.SECP256R1())
    return _CA_KEY


def issued_event(common_name: str = "test.example", **fields: Any) -> CertIssued:
    """A certificate for ``common_name`` signed by a throwaway CA, described as ``cert.issued``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certbus test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(_ca_key(), hashes.SHA256())
    )
    key_type, key_size = pki.describe_key(cert.public_key())
    values: dict[str, Any] = {
        "request_id": new_id(),
        "cert_id": new_id(),
        "serial": pki.render_serial(cert.serial_number),
        "issuer_ca": "test-ca",
        "issuer_dn": cert.issuer.rfc4514_string(),
        "subject_dn": cert.subject.rfc4514_string(),
        "sans": [common_name],
        "thumbprint_sha1": pki.thumbprint(cert, "sha1"),
        "thumbprint_sha256": pki.thumbprint(cert),
        "public_key_sha256": pki.public_key_sha256(cert),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "template": "test",
        "key_type": key_type,
        "key_size": key_size,
        "signature_algorithm": pki.signature_algorithm_name(cert),
        "certificate_pem": pki.pem(cert),
    }
    values.update(fields)
    return CertIssued(**values)
