"""Offboarding: open when HR says a user left, complete once every certificate is gone."""

from __future__ import annotations

from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory.identities import devices_of
from services.inventory.tables import (
    Certificate,
    Location,
    Offboarding,
    ProvisioningRequest,
    User,
)
from services.inventory.timeutil import iso
from shared.clock import utcnow
from shared.events import OffboardingMode, UserOffboarded, UserOffboardingCompleted


async def open_(session: AsyncSession, ev: UserOffboarded) -> Offboarding:
    user = await session.get(User, ev.user)
    if user is None:
        user = User(user=ev.user)
        session.add(user)
    rehired = user.status != "offboarded"
    user.status, user.offboarded_at, user.updated_at = "offboarded", ev.occurred_at, utcnow()
    row = await session.get(Offboarding, ev.user)
    if row is not None and rehired and row.status == "completed" and row.event_id != ev.event_id:
        # Hired again since that offboarding completed, and leaving again: a new offboarding.
        row.mode, row.event_id, row.correlation_id = ev.mode.value, ev.event_id, ev.correlation_id
        row.status, row.started_at, row.completed_at = "open", ev.occurred_at, None
        row.found = row.revoked = row.removed = row.pending = 0
        row.cert_ids = []
    if row is None:
        row = Offboarding(
            user=ev.user,
            mode=ev.mode.value,
            event_id=ev.event_id,
            correlation_id=ev.correlation_id,
            started_at=ev.occurred_at,
        )
        session.add(row)
    return row


async def affected(session: AsyncSession, user: str) -> list[Certificate]:
    """Certificates owned by the user or ever installed on one of the user's devices."""
    devices = await devices_of(session, user, active_only=False)
    owned = select(Certificate).where(Certificate.owner == user)
    rows = {c.cert_id: c for c in (await session.exec(owned)).all()}
    if devices:
        on_devices = select(Certificate).where(
            Certificate.cert_id.in_(  # type: ignore[attr-defined]
                select(Location.cert_id).where(Location.machine.in_(devices))  # type: ignore[attr-defined]
            )
        )
        rows.update({c.cert_id: c for c in (await session.exec(on_devices)).all()})
    return [rows[k] for k in sorted(rows)]


async def progress(session: AsyncSession, row: Offboarding) -> dict[str, Any]:
    certs = await affected(session, row.user)
    if row.status == "completed":
        # What it completed with: a device of the leaver's may hold other users' certificates
        # since (a shared machine), and those are not this offboarding's business.
        certs = [c for c in certs if c.cert_id in set(row.cert_ids)]
    ids = [c.cert_id for c in certs]
    locations = (
        (await session.exec(select(Location).where(Location.cert_id.in_(ids)))).all()  # type: ignore[attr-defined]
        if ids
        else []
    )
    waiting = (
        await session.exec(
            select(ProvisioningRequest.request_id).where(
                ProvisioningRequest.user == row.user, ProvisioningRequest.status == "waiting"
            )
        )
    ).all()
    disable = row.mode == "disable"
    # In disable mode certificates stay installed, switched off, so each can be re-enabled.
    still_installed = [] if disable else sorted({loc.cert_id for loc in locations if loc.active})
    not_revoked = sorted(
        c.cert_id for c in certs if c.status != "revoked" and not (disable and _disabled(c))
    )
    return {
        "user": row.user,
        "mode": row.mode,
        "status": row.status,
        "started_at": iso(row.started_at),
        "completed_at": iso(row.completed_at),
        "found": len(certs),
        "revoked": sum(1 for c in certs if c.status == "revoked"),
        "disabled": sum(1 for c in certs if c.status != "revoked" and _disabled(c)),
        "removed": sum(1 for loc in locations if not loc.active),
        "still_installed": len([loc for loc in locations if loc.active]),
        "pending": {
            "not_revoked": not_revoked,
            "still_installed": still_installed,
            "requests_waiting": sorted(waiting),
        },
        "cert_ids": ids,
        "certificates": [
            {
                "id": c.cert_id,
                "serial": c.serial,
                "status": c.status,
                "revoked_at": iso(c.revoked_at),
                "removed_from": [
                    {
                        "machine": loc.machine,
                        "store_path": loc.store_path,
                        "alias": loc.alias,
                        "removed_at": iso(loc.removed_at),
                    }
                    for loc in locations
                    if loc.cert_id == c.cert_id and not loc.active
                ],
            }
            for c in certs
        ],
    }


def _disabled(cert: Certificate) -> bool:
    return str(cert.metadata_.get("isEnabled", "true")).lower() == "false"


async def check_open(session: AsyncSession) -> list[UserOffboardingCompleted]:
    """Complete every open offboarding whose work is all done, each exactly once."""
    out = []
    for row in (await session.exec(select(Offboarding).where(Offboarding.status == "open"))).all():
        p = await progress(session, row)
        pending = p["pending"]
        if pending["not_revoked"] or pending["still_installed"] or pending["requests_waiting"]:
            continue
        row.status, row.completed_at = "completed", utcnow()
        row.found, row.revoked, row.removed = p["found"], p["revoked"], p["removed"]
        row.cert_ids = p["cert_ids"]
        out.append(
            UserOffboardingCompleted(
                event_id=f"offboarding-completed-{row.event_id}",
                correlation_id=row.correlation_id or "",
                causation_id=row.event_id,
                user=row.user,
                mode=OffboardingMode(row.mode),
                found=row.found,
                revoked=row.revoked,
                removed=row.removed,
                cert_ids=row.cert_ids,
            )
        )
    return out
