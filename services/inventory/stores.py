"""Stores and agents as inventory knows them: where they are, whether they are trusted."""

from __future__ import annotations

from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory.prefetch import lookup
from services.inventory.tables import Agent, Device, Store
from services.inventory.timeutil import as_utc, iso
from shared.clock import utcnow
from shared.events import AgentHeartbeat, StoreTarget, derived_id


def store_id(machine: str, store_type: str, store_path: str) -> str:
    return derived_id("store", machine, store_type, store_path)


async def record_store(
    session: AsyncSession, target: StoreTarget, source: str, status: str = "approved"
) -> Store:
    """The store's row, made with ``status`` if new. Stores inventory makes itself (policy, API,
    install) are approved; discovery's wait for ``stores.approve``, or for the policy to name
    them. Only approved stores can be inventoried or enrolled into."""
    sid = store_id(target.machine, target.store_type, target.store_path)
    cache: dict[str, Store] = session.info.setdefault("inventory_stores", {})
    prefetched = target.machine in session.info.get("inventory_store_machines", ())
    row = cache.get(sid)
    if row is None and not prefetched:
        row = await session.get(Store, sid)
    if row is None and prefetched:
        row = next((s for s in session.identity_map.values()
                    if isinstance(s, Store) and s.id == sid), None)  # fmt: skip
    if row is None:
        row = Store(id=sid, machine=target.machine, store_type=target.store_type,
                    store_path=target.store_path, source=source, status=status)  # fmt: skip
        session.add(row)
    elif source == "policy" and row.status == "discovered":
        # Discovery found it first; now the policy installs there, so inventory manages it.
        row.status = "approved"
    cache[sid] = row
    return row


async def heard_from(
    session: AsyncSession, ev: AgentHeartbeat, patterns: list[str], known_devices: bool
) -> Agent:
    """Register an agent at its first heartbeat; approve it at once if a rule says so."""
    row = await session.get(Agent, ev.machine)
    if row is None:
        row = Agent(machine=ev.machine, first_seen=ev.occurred_at, last_seen=ev.occurred_at)
        session.add(row)
    # Rules are checked at every heartbeat of an undecided agent: its machine may become a
    # known device after it first reported.
    if row.status == "pending" and row.decided_by is None:
        if any(fnmatchcase(ev.machine, p) for p in patterns):
            row.status, row.decided_by, row.decided_at = "approved", "auto-approval rule", utcnow()
        elif known_devices and await session.get(Device, ev.machine) is not None:
            row.status, row.decided_by, row.decided_at = "approved", "known device", utcnow()
    if as_utc(row.last_seen) < ev.occurred_at:  # type: ignore[operator]
        row.last_seen, row.version = ev.occurred_at, ev.version
    return row


async def approve_known_devices(session: AsyncSession, machines: list[str]) -> None:
    """Agents that reported before HR named their machine are approved once it is known."""
    for machine in machines:
        row = await lookup(session, Agent, machine)
        if row is not None and row.status == "pending" and row.decided_by is None:
            row.status, row.decided_by, row.decided_at = "approved", "known device", utcnow()


def agent_json(row: Agent, offline_after: float, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    silent = now - (as_utc(row.last_seen) or now)
    return {
        "machine": row.machine,
        "status": row.status,
        "online": silent <= timedelta(seconds=offline_after),
        "state": "online" if silent <= timedelta(seconds=offline_after) else "offline",
        "last_seen": iso(row.last_seen),
        "first_seen": iso(row.first_seen),
        "version": row.version,
        "decided_at": iso(row.decided_at),
        "decided_by": row.decided_by,
    }


def store_json(row: Store) -> dict[str, Any]:
    return {
        "id": row.id,
        "machine": row.machine,
        "store_type": row.store_type,
        "store_path": row.store_path,
        "status": row.status,
        "source": row.source,
        "entries": row.entries,
        "created_at": iso(row.created_at),
        "inventoried_at": iso(row.inventoried_at),
        "last_job_id": row.last_job_id,
    }


async def stores_of(session: AsyncSession, machine: str | None = None) -> list[Store]:
    query = select(Store).order_by(Store.machine, Store.store_path)  # type: ignore[arg-type]
    if machine:
        query = query.where(Store.machine == machine)
    return list((await session.exec(query)).all())
