"""Building full and delta CRLs (RFC 5280 section 5) from a CA's revoked serials.

The whole entry list goes to the builder's constructor in one piece: adding entries one at a
time is quadratic and takes minutes for a large CA.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from services.issuer import urls
from services.issuer.ca import CertificateAuthority
from shared.pki import RevocationReason


@dataclass(frozen=True)
class CrlEntry:
    serial: int
    revoked_at: datetime
    reason: RevocationReason = RevocationReason.UNSPECIFIED
    invalidity_date: datetime | None = None


def revoked_certificate(entry: CrlEntry) -> x509.RevokedCertificate:
    builder = x509.RevokedCertificateBuilder(
        serial_number=entry.serial, revocation_date=entry.revoked_at
    )
    # RFC 5280 5.3.1: the reason code unspecified SHOULD be absent.
    if entry.reason != RevocationReason.UNSPECIFIED:
        builder = builder.add_extension(x509.CRLReason(entry.reason.x509_flag), critical=False)
    if entry.invalidity_date is not None:
        builder = builder.add_extension(x509.InvalidityDate(entry.invalidity_date), critical=False)
    return builder.build()


def build_crl(
    ca: CertificateAuthority,
    entries: Iterable[CrlEntry],
    number: int,
    this_update: datetime,
    next_update: datetime,
    base_url: str,
    *,
    delta_of: int | None = None,
    freshest: bool = True,
) -> x509.CertificateRevocationList:
    """A full CRL, or with ``delta_of`` a delta CRL against that base CRL number."""
    extensions: list[x509.Extension[x509.ExtensionType]] = [
        x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
        x509.Extension(
            x509.AuthorityKeyIdentifier.oid,
            False,
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca.ski()),
        ),
    ]
    if delta_of is not None:
        extensions.append(
            x509.Extension(x509.DeltaCRLIndicator.oid, True, x509.DeltaCRLIndicator(delta_of))
        )
    elif freshest:
        point = x509.DistributionPoint(
            [x509.UniformResourceIdentifier(urls.delta_crl_url(base_url, ca.name))],
            None,
            None,
            None,
        )
        extensions.append(x509.Extension(x509.FreshestCRL.oid, False, x509.FreshestCRL([point])))
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=ca.certificate.subject,
        last_update=this_update,
        next_update=next_update,
        extensions=extensions,
        revoked_certificates=[revoked_certificate(e) for e in entries],
    )
    return ca.signer.sign_crl(builder)
