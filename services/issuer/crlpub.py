"""CRL publication: coalesce bursts of revocations, build once, store, announce.

A revocation marks its CA's CRL state dirty in the same transaction that records it; this
publisher wakes up, waits for the burst to settle, and publishes each dirty CA's full CRL
and a delta against the current base. CRL numbers come from the database, so they survive
restarts and only grow. A crash after the revocation commits but before the CRL is out is
repaired at the next start: the state is still dirty.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptography.hazmat.primitives.serialization import Encoding
from sqlmodel import select

from services.issuer.ca import CaRegistry
from services.issuer.crl import CrlEntry, build_crl
from services.issuer.tables import CrlState, RevokedSerial
from shared.clock import Clock, SystemClock
from shared.events import CrlPublished, derived_id
from shared.pki import RevocationReason, parse_serial

log = logging.getLogger("certbus.issuer.crl")


class ObjectStore(Protocol):
    async def put(self, name: str, data: bytes) -> None: ...


class UnitOfWork(Protocol):
    session: Any

    def emit(self, *events: Any) -> None: ...


UowFactory = Callable[[], AbstractAsyncContextManager[UnitOfWork]]


@dataclass
class CrlTiming:
    validity: timedelta = timedelta(hours=24)
    refresh: timedelta = timedelta(hours=6)
    debounce: float = 0.25
    max_delay: float = 2.0


@dataclass(frozen=True)
class Snapshot:
    ca: str
    number: int
    delta_number: int | None
    base_number: int
    changes: int
    rotate: bool
    full: list[CrlEntry]
    delta: list[CrlEntry]


class CrlPublisher:
    def __init__(
        self,
        cas: CaRegistry,
        unit_of_work: UowFactory,
        store: ObjectStore,
        base_url: str,
        timing: CrlTiming | None = None,
        clock: Clock | None = None,
        deltas: bool = True,
    ) -> None:
        self.cas = cas
        self._uow = unit_of_work
        self._store = store
        self.base_url = base_url
        self.timing = timing or CrlTiming()
        self.clock = clock or SystemClock()
        self.deltas = deltas
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = asyncio.Lock()
        self.published: list[CrlPublished] = []

    def notify(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="crl-publisher")
        self.notify()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task:
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = min(60.0, self.timing.refresh.total_seconds() / 4)
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=tick)
            except TimeoutError:
                pass
            first = loop.time()
            while not self._stopping and loop.time() - first < self.timing.max_delay:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.timing.debounce)
                except TimeoutError:
                    break
            self._wake.clear()
            try:
                await self.publish_due()
            except Exception:  # noqa: BLE001 - the next tick retries; the state is still dirty
                log.exception("CRL publication failed; retrying")
                await asyncio.sleep(1.0)

    async def publish_due(self) -> list[CrlPublished]:
        """Publish every CA whose revocations changed or whose CRL is due for refresh."""
        async with self._lock:
            out: list[CrlPublished] = []
            for ca in self.cas.all():
                snap = await self._snapshot(ca.name, force=False)
                if snap is not None:
                    out.extend(await self._publish(snap))
            return out

    async def publish_now(self, ca: str, rotate: bool = False) -> list[CrlPublished]:
        async with self._lock:
            snap = await self._snapshot(ca, force=True, rotate=rotate)
            assert snap is not None
            return await self._publish(snap)

    async def _snapshot(self, ca: str, *, force: bool, rotate: bool = False) -> Snapshot | None:
        now = self.clock.now()
        async with self._uow() as uow:
            s = uow.session
            state = await s.get(CrlState, ca, with_for_update=True)
            if state is None:
                state = CrlState(ca=ca)
                s.add(state)
            published = _aware(state.published_at)
            due = published is None or now - published >= self.timing.refresh
            dirty = state.changes != state.published_changes
            if not (force or dirty or due):
                return None
            rotate = rotate or due or state.base_number == 0
            # Plain rows, not ORM objects: a large CA has hundreds of thousands of entries.
            table = RevokedSerial.__table__  # type: ignore[attr-defined]
            conn = await s.connection()
            rows = (await conn.execute(select(table).where(table.c.ca == ca))).all()
            number = state.last_number + 1
            delta_number = number + 1 if self.deltas else None
            state.last_number = delta_number or number
            base_number, base_seq = state.base_number, state.base_seq
            if rotate:
                base_number, base_seq = number, state.changes
                state.base_number, state.base_seq = base_number, base_seq
            changes = state.changes
            s.add(state)
        full = [_entry(r) for r in rows if not r.released]
        delta = [_entry(r, removed=r.released) for r in rows if r.changed_seq > base_seq]
        return Snapshot(ca, number, delta_number, base_number, changes, rotate, full, delta)

    async def _publish(self, snap: Snapshot) -> list[CrlPublished]:
        ca = self.cas.get(snap.ca)
        this_update = self.clock.now().replace(microsecond=0)
        next_update = this_update + self.timing.validity
        items: list[tuple[int, bool, list[CrlEntry]]] = [(snap.number, False, snap.full)]
        if snap.delta_number is not None:
            items.append((snap.delta_number, True, snap.delta))
        events: list[CrlPublished] = []
        for number, delta, entries in items:
            crl = await asyncio.to_thread(
                build_crl,
                ca,
                entries,
                number,
                this_update,
                next_update,
                self.base_url,
                delta_of=snap.base_number if delta else None,
                freshest=self.deltas,
            )
            der = crl.public_bytes(Encoding.DER)
            name = f"{snap.ca}/delta-{number}.crl" if delta else f"{snap.ca}/{number}.crl"
            await self._store.put(name, der)
            events.append(
                CrlPublished(
                    event_id=derived_id("crl.published", snap.ca, str(number)),
                    ca=snap.ca,
                    crl_number=number,
                    delta=delta,
                    base_crl_number=snap.base_number if delta else None,
                    this_update=this_update,
                    next_update=next_update,
                    entries=len(entries),
                    object_name=name,
                    sha256=hashlib.sha256(der).hexdigest(),
                )
            )
        async with self._uow() as uow:
            state = await uow.session.get(CrlState, snap.ca, with_for_update=True)
            if state is not None:
                state.published_changes = max(state.published_changes, snap.changes)
                state.published_at = this_update
                uow.session.add(state)
            uow.emit(*events)
        self.published.extend(events)
        log.info("published CRL %s #%d (%d entries)", snap.ca, snap.number, len(snap.full))
        return events


def _entry(row: Any, removed: bool = False) -> CrlEntry:
    return CrlEntry(
        serial=parse_serial(row.serial),
        revoked_at=_aware(row.revoked_at),  # type: ignore[arg-type]
        reason=RevocationReason.REMOVE_FROM_CRL if removed else RevocationReason(row.reason),
        invalidity_date=None if removed else _aware(row.invalidity_date),
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
