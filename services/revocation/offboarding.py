"""Guaranteed offboarding: a leaver's certificates are revoked now, and on sight later."""

from __future__ import annotations

from dataclasses import replace

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.revocation import projection
from services.revocation.models import DeviceOwner, KnownCertificate, OffboardedUser
from services.revocation.revoker import (
    RevocationOrder,
    RevocationResult,
    existing_revocations,
    revoke,
)
from services.revocation.timeutil import as_utc
from shared.clock import utcnow
from shared.events import OffboardingMode, UserOffboarded
from shared.pki import RevocationReason

OFFBOARDING_REASON = RevocationReason.CESSATION_OF_OPERATION


def offboarding_comment(ev: UserOffboarded) -> str:
    return f"{ev.subject} {ev.event_id}: {ev.comment or 'offboarded'}"


async def offboard(session: AsyncSession, ev: UserOffboarded) -> RevocationResult:
    """Revoke everything issued to the user or installed on the user's devices (mode revoke)."""
    if ev.mode != OffboardingMode.REVOKE:
        return RevocationResult()
    record = await session.get(OffboardedUser, ev.user)
    if record is None:
        record = OffboardedUser(
            user=ev.user,
            event_id=ev.event_id,
            correlation_id=ev.correlation_id,
            comment=offboarding_comment(ev),
            revoked_at=ev.effective_at or utcnow(),
            occurred_at=ev.occurred_at,
        )
        session.add(record)
        await session.flush()
    certs = await projection.certificates_of_user(session, ev.user)
    return await revoke(session, certs, order_for(record))


async def offboard_many(session: AsyncSession, events: list[UserOffboarded]) -> RevocationResult:
    """``offboard`` for a batch of events, with a handful of queries instead of a few per user."""
    leaving = [ev for ev in events if ev.mode == OffboardingMode.REVOKE]
    users = sorted({ev.user for ev in leaving})
    if not users:
        return RevocationResult()
    records = {
        r.user: r
        for r in (
            await session.exec(select(OffboardedUser).where(OffboardedUser.user.in_(users)))  # type: ignore[attr-defined]
        ).all()
    }
    for ev in leaving:
        if ev.user not in records:
            records[ev.user] = OffboardedUser(
                user=ev.user,
                event_id=ev.event_id,
                correlation_id=ev.correlation_id,
                comment=offboarding_comment(ev),
                revoked_at=ev.effective_at or utcnow(),
                occurred_at=ev.occurred_at,
            )
            session.add(records[ev.user])
    certs = await projection.certificates_of_users(session, users)
    existing = dict(await existing_revocations(session, [c for cs in certs.values() for c in cs]))
    result = RevocationResult()
    for user in users:
        result.extend(await revoke(session, certs[user], order_for(records[user]), existing))
    await session.flush()
    return result


def late_order_for(record: OffboardedUser) -> RevocationOrder:
    """For a certificate that reaches a leaver after the offboarding: revoked when seen, not at
    the offboarding's time, which may precede the certificate's own validity."""
    order = order_for(record)
    now = utcnow()
    return replace(order, revoked_at=max(order.revoked_at, now) if order.revoked_at else now)


def order_for(record: OffboardedUser) -> RevocationOrder:
    return RevocationOrder(
        reason=OFFBOARDING_REASON,
        comment=record.comment,
        cause=record.event_id,
        correlation_id=record.correlation_id,
        revoked_at=as_utc(record.revoked_at),
        actor="revocation",
        causation_id=record.event_id,
    )


async def revoke_if_offboarded(session: AsyncSession, cert: KnownCertificate) -> RevocationResult:
    """A certificate that reaches an offboarded user (as owner or on one of their devices) is
    revoked at once, under that user's offboarding."""
    users = await projection.owners_of(session, await projection.machines_of(session, cert))
    if cert.owner:
        users.add(cert.owner)
    for user in sorted(users):
        record = await session.get(OffboardedUser, user)
        if record is not None:
            return await revoke(session, [cert], late_order_for(record))
    return RevocationResult()


async def possibly_offboarded(
    session: AsyncSession, certs: list[KnownCertificate]
) -> list[KnownCertificate]:
    """The certificates of a batch that may reach an offboarded user (a cheap pre-filter for
    ``revoke_if_offboarded``: a few queries for the whole batch)."""
    machines = await projection.installed_machines(session, certs)
    owners = {d.device: d.user for d in await _device_owners(session, machines)}
    users_of = {
        c.cert_id: {
            *(owners[m] for m in machines[c.cert_id] if m in owners),
            *([c.owner] if c.owner else []),
        }
        for c in certs
    }
    candidates = sorted(set().union(*users_of.values())) if users_of else []
    if not candidates:
        return []
    leavers: set[str] = set()
    column = OffboardedUser.user
    for start in range(0, len(candidates), 500):
        chunk = candidates[start : start + 500]
        rows = await session.exec(select(column).where(column.in_(chunk)))  # type: ignore[attr-defined]
        leavers.update(rows.all())
    return [c for c in certs if users_of[c.cert_id] & leavers]


async def _device_owners(session: AsyncSession, machines: dict[str, set[str]]) -> list[DeviceOwner]:
    names = sorted(set().union(*machines.values())) if machines else []
    found: list[DeviceOwner] = []
    for start in range(0, len(names), 500):
        rows = await session.exec(
            select(DeviceOwner).where(DeviceOwner.device.in_(names[start : start + 500]))  # type: ignore[attr-defined]
        )
        found.extend(rows.all())
    return found


async def revoke_on_devices_of_offboarded(
    session: AsyncSession, user: str, devices: list[str]
) -> RevocationResult:
    """Devices newly known to belong to an offboarded user: what is on them goes too."""
    record = await session.get(OffboardedUser, user)
    if record is None or not devices:
        return RevocationResult()
    return await revoke(
        session, await projection.certificates_on(session, devices), late_order_for(record)
    )


async def rehire(session: AsyncSession, user: str, onboarded_at: object) -> None:
    """An onboarding that happened after the offboarding lifts the "revoke on sight" rule."""
    record = await session.get(OffboardedUser, user)
    if record is not None and onboarded_at > as_utc(record.occurred_at):  # type: ignore[operator]
        await session.delete(record)
        await session.flush()
