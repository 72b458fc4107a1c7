"""Keeping the newest CRLs the issuer published, and the HTTP caching rules for serving them."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from email.utils import format_datetime
from typing import Protocol

from cryptography import x509
from sqlmodel.ext.asyncio.session import AsyncSession

from services.revocation.models import KnownCa, StoredCrl
from services.revocation.timeutil import as_utc
from shared.clock import utcnow
from shared.events import CrlPublished

log = logging.getLogger("certbus.revocation.crls")

CRL_MEDIA_TYPE = "application/pkix-crl"


class CrlSource(Protocol):
    async def fetch(self, object_name: str) -> bytes: ...


class InvalidCrl(ValueError):
    """What the bucket holds is not the CRL the event announced."""


def check(ev: CrlPublished, der: bytes, ca: KnownCa | None) -> x509.CertificateRevocationList:
    if hashlib.sha256(der).hexdigest() != ev.sha256.lower():
        raise InvalidCrl(f"{ev.object_name}: SHA-256 differs from the announcement")
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise InvalidCrl(f"{ev.object_name}: not a DER CRL ({exc})") from exc
    if ca is not None:
        issuer = x509.load_der_x509_certificate(ca.der)
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise InvalidCrl(f"{ev.object_name}: not signed by CA {ev.ca}")
    return crl


async def accept(session: AsyncSession, ev: CrlPublished, der: bytes) -> bool:
    """Store ``der`` as the CA's newest full or delta CRL, unless a newer one is stored already."""
    ca = await session.get(KnownCa, ev.ca)
    check(ev, der, ca)
    current = await session.get(StoredCrl, (ev.ca, ev.delta))
    if current is not None and current.crl_number >= ev.crl_number:
        return False
    row = current or StoredCrl(
        ca=ev.ca,
        delta=ev.delta,
        crl_number=0,
        der=b"",
        sha256="",
        this_update=ev.this_update,
        next_update=ev.next_update,
        stored_at=utcnow(),
    )
    row.crl_number = ev.crl_number
    row.der = der
    row.sha256 = ev.sha256.lower()
    row.this_update = ev.this_update
    row.next_update = ev.next_update
    row.entries = ev.entries
    row.stored_at = utcnow()
    session.add(row)
    await session.flush()
    return True


def http_date(value: datetime) -> str:
    return format_datetime(as_utc(value), usegmt=True)


def caching_headers(
    crl: StoredCrl, max_age_cap: int, now: datetime | None = None
) -> dict[str, str]:
    """Cache until nextUpdate at the latest, and no longer than ``max_age_cap`` seconds, so a
    new CRL published on change reaches relying parties quickly."""
    now = now or utcnow()
    remaining = int((as_utc(crl.next_update) - now).total_seconds())
    max_age = max(0, min(max_age_cap, remaining))
    return {
        "ETag": f'"{crl.sha256}"',
        "Last-Modified": http_date(crl.this_update),
        "Expires": http_date(crl.next_update),
        "Cache-Control": f"public, max-age={max_age}, no-transform",
    }
