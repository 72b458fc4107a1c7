"""Reading a CSR in any of the forms real tools write, and proving the requester holds the key."""

from __future__ import annotations

import base64
import binascii
import re

from cryptography import x509

from services.issuer import errors
from services.issuer.errors import Rejection

_PEM = re.compile(
    rb"-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----(.+?)-----END (?:NEW )?CERTIFICATE REQUEST-----",
    re.S,
)


def parse_csr(data: str | bytes) -> x509.CertificateSigningRequest:
    """Accept PEM (also ``NEW CERTIFICATE REQUEST``), DER, or bare base64 DER."""
    raw = data.encode() if isinstance(data, str) else data
    match = _PEM.search(raw)
    try:
        if match:
            der = base64.b64decode(b"".join(match.group(1).split()), validate=True)
        elif raw.lstrip()[:1] == b"0" or raw[:1] == b"\x30":
            der = raw
        else:
            der = base64.b64decode(b"".join(raw.split()), validate=True)
        return x509.load_der_x509_csr(der)
    except (ValueError, binascii.Error, TypeError) as exc:
        raise Rejection(errors.CSR_MALFORMED, f"the CSR cannot be parsed: {exc}") from exc


def check_proof_of_possession(csr: x509.CertificateSigningRequest) -> None:
    """The CSR must be signed by the key it carries."""
    try:
        valid = csr.is_signature_valid
    except Exception as exc:  # noqa: BLE001 - unsupported or broken key material
        raise Rejection(
            errors.CSR_SIGNATURE_INVALID, f"the CSR signature cannot be checked: {exc}"
        ) from exc
    if not valid:
        raise Rejection(
            errors.CSR_SIGNATURE_INVALID,
            "proof of possession failed: the CSR signature does not verify with its public key",
        )


def refuse_ca_request(csr: x509.CertificateSigningRequest) -> None:
    """A CSR asking to become a CA (basicConstraints CA:TRUE, keyCertSign, cRLSign) is refused."""
    try:
        extensions = csr.extensions
    except Exception as exc:  # noqa: BLE001
        raise Rejection(
            errors.CSR_MALFORMED, f"the CSR's extensions cannot be parsed: {exc}"
        ) from exc
    for ext in extensions:
        value = ext.value
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise Rejection(
                errors.CA_REQUEST_REFUSED,
                "CA certificates are never issued: the CSR requests basicConstraints CA:TRUE",
            )
        if isinstance(value, x509.KeyUsage) and (value.key_cert_sign or value.crl_sign):
            raise Rejection(
                errors.CA_REQUEST_REFUSED,
                "CA certificates are never issued: the CSR requests keyCertSign or cRLSign",
            )


def requested_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def render_general_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"dns:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"ip:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"uri:{name.value}"
    return f"other:{type(name).__name__}"
