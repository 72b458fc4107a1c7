"""Revocation fanned out from events: a decommissioned device, a compromised CA or key."""

from __future__ import annotations

from sqlalchemy import and_, or_
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.revocation import projection
from services.revocation.models import Compromise, KnownCa, KnownCertificate
from services.revocation.revoker import RevocationOrder, RevocationResult, revoke
from services.revocation.timeutil import as_utc
from shared.events import CaCompromised, DeviceDecommissioned, Event, KeyCompromised
from shared.pki import RevocationReason

CA, KEY = "ca", "key"
REASONS = {CA: RevocationReason.CA_COMPROMISE, KEY: RevocationReason.KEY_COMPROMISE}


def _order(ev: Event, reason: RevocationReason, comment: str) -> RevocationOrder:
    return RevocationOrder(
        reason=reason,
        comment=f"{ev.subject_name()} {ev.event_id}: {comment}",
        cause=ev.event_id,
        correlation_id=ev.correlation_id,
        revoked_at=ev.occurred_at,
        actor="revocation",
        causation_id=ev.event_id,
    )


async def device_decommissioned(
    session: AsyncSession, ev: DeviceDecommissioned
) -> RevocationResult:
    certs = await projection.certificates_on(session, [ev.device])
    return await revoke(
        session, certs, _order(ev, RevocationReason.CESSATION_OF_OPERATION, "device decommissioned")
    )


async def _remember(
    session: AsyncSession, kind: str, value: str, ev: Event, comment: str
) -> Compromise:
    row = await session.get(Compromise, (kind, value))
    if row is None:
        row = Compromise(
            kind=kind,
            value=value,
            event_id=ev.event_id,
            correlation_id=ev.correlation_id,
            comment=comment,
            at=ev.occurred_at,
        )
        session.add(row)
        await session.flush()
    return row


def _order_from(row: Compromise) -> RevocationOrder:
    return RevocationOrder(
        reason=REASONS[row.kind],
        comment=row.comment,
        cause=row.event_id,
        correlation_id=row.correlation_id,
        revoked_at=as_utc(row.at),
        actor="revocation",
        causation_id=row.event_id,
    )


async def ca_compromised(session: AsyncSession, ev: CaCompromised) -> RevocationResult:
    row = await _remember(session, CA, ev.ca, ev, f"{ev.subject} {ev.event_id}: {ev.comment}")
    ca = await session.get(KnownCa, ev.ca)
    if ca is not None and not ca.compromised:
        ca.compromised = True
        session.add(ca)
    certs = (
        await session.exec(select(KnownCertificate).where(KnownCertificate.issuer_ca == ev.ca))
    ).all()
    return await revoke(session, list(certs), _order_from(row))


async def key_compromised(session: AsyncSession, ev: KeyCompromised) -> RevocationResult:
    key = ev.public_key_sha256.lower()
    row = await _remember(session, KEY, key, ev, f"{ev.subject} {ev.event_id}: {ev.comment}")
    certs = (
        await session.exec(
            select(KnownCertificate).where(KnownCertificate.public_key_sha256 == key)
        )
    ).all()
    return await revoke(session, list(certs), _order_from(row))


async def possibly_compromised(
    session: AsyncSession, certs: list[KnownCertificate]
) -> list[KnownCertificate]:
    """The certificates of a batch from a compromised CA or for a compromised key (one query)."""
    keys = sorted({c.public_key_sha256 for c in certs})
    cas = sorted({c.issuer_ca for c in certs})
    if not certs:
        return []
    rows = await session.exec(
        select(Compromise).where(
            or_(
                and_(Compromise.kind == KEY, Compromise.value.in_(keys)),  # type: ignore[attr-defined,arg-type]
                and_(Compromise.kind == CA, Compromise.value.in_(cas)),  # type: ignore[attr-defined,arg-type]
            )
        )
    )
    bad = {(r.kind, r.value) for r in rows.all()}
    if not bad:
        return []
    return [c for c in certs if (KEY, c.public_key_sha256) in bad or (CA, c.issuer_ca) in bad]


async def revoke_if_compromised(session: AsyncSession, cert: KnownCertificate) -> RevocationResult:
    """A new certificate from a compromised CA, or for a compromised key, is revoked on arrival."""
    for kind, value in ((KEY, cert.public_key_sha256), (CA, cert.issuer_ca)):
        row = await session.get(Compromise, (kind, value))
        if row is not None:
            return await revoke(session, [cert], _order_from(row))
    return RevocationResult()
