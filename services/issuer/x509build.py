"""End-entity certificates per RFC 5280, built from a validated request and signed once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from services.issuer import urls
from services.issuer.ca import CertificateAuthority
from services.issuer.templates import Template

EKU_OIDS = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "time_stamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
}
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class LeafRequest:
    """Everything a certificate says, once policy has accepted it."""

    template: Template
    ca: CertificateAuthority
    subject: x509.Name
    sans: tuple[x509.GeneralName, ...]
    public_key: CertificatePublicKeyTypes
    key_type: str


def key_usage(names: list[str]) -> x509.KeyUsage:
    flags = {
        n: n in names
        for n in (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
        )
    }
    return x509.KeyUsage(
        **flags, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False
    )


def validity(ca: CertificateAuthority, days: int, now: datetime) -> tuple[datetime, datetime]:
    """Backdated a little for clock skew, and never outside the issuing CA's own validity."""
    not_before = max(now - BACKDATE, ca.certificate.not_valid_before_utc)
    not_after = min(now + timedelta(days=days), ca.certificate.not_valid_after_utc)
    return not_before, not_after


def ca_extensions(ca: CertificateAuthority, base_url: str, delta_crl: bool) -> list[x509.Extension]:
    """The extensions every certificate of ``ca`` carries: AKI, CRL DP, AIA, freshest CRL."""
    aia = x509.AuthorityInformationAccess(
        [
            x509.AccessDescription(
                x509.AuthorityInformationAccessOID.OCSP,
                x509.UniformResourceIdentifier(urls.ocsp_url(base_url)),
            ),
            x509.AccessDescription(
                x509.AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(urls.ca_issuers_url(base_url, ca.name)),
            ),
        ]
    )
    out = [
        _ext(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca.ski())),
        _ext(x509.CRLDistributionPoints([_point(urls.crl_url(base_url, ca.name))])),
        _ext(aia),
    ]
    if delta_crl:
        out.append(_ext(x509.FreshestCRL([_point(urls.delta_crl_url(base_url, ca.name))])))
    return out


def build_leaf(
    req: LeafRequest,
    serial: int,
    base_url: str,
    now: datetime,
    *,
    delta_crl: bool = True,
    static: list[x509.Extension] | None = None,
) -> x509.Certificate:
    ca, t = req.ca, req.template
    not_before, not_after = validity(ca, t.validity_days, now)
    extensions = [
        _ext(x509.BasicConstraints(ca=False, path_length=None), critical=True),
        _ext(key_usage(t.key_usage), critical=True),
        _ext(x509.SubjectKeyIdentifier.from_public_key(req.public_key)),
        *(static if static is not None else ca_extensions(ca, base_url, delta_crl)),
    ]
    if t.extended_key_usage:
        extensions.append(_ext(x509.ExtendedKeyUsage([EKU_OIDS[e] for e in t.extended_key_usage])))
    if req.sans:
        # RFC 5280 4.2.1.6: critical when the subject is empty.
        extensions.append(
            _ext(x509.SubjectAlternativeName(list(req.sans)), critical=len(req.subject) == 0)
        )
    if t.ocsp_no_check:
        extensions.append(_ext(x509.OCSPNoCheck()))
    builder = x509.CertificateBuilder(
        issuer_name=ca.certificate.subject,
        subject_name=req.subject,
        public_key=req.public_key,
        serial_number=serial,
        not_valid_before=not_before,
        not_valid_after=not_after,
        extensions=extensions,
    )
    return ca.signer.sign_certificate(builder)


def _ext(value: x509.ExtensionType, critical: bool = False) -> x509.Extension:
    return x509.Extension(value.oid, critical, value)


def _point(url: str) -> x509.DistributionPoint:
    return x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
