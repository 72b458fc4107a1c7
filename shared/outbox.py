"""Transactional outbox: a state change and the event announcing it commit together.

A service adds its events to the outbox inside the same transaction as its own rows; the relay
publishes them to JetStream (the event id is the ``Nats-Msg-Id``, so a publish repeated after a
crash is dropped by the stream's duplicate window) and only then deletes them. A process that
dies between its commit and its publish sends the event when it starts again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from sqlalchemy import Column, Text, delete, select
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import Database
from shared.events import Event

log = logging.getLogger("certbus.outbox")


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(index=True)
    subject: str
    payload: str = Field(sa_column=Column(Text, nullable=False))


def stage(session: AsyncSession, events: Iterable[Event]) -> None:
    """Add events to the outbox of the transaction ``session`` belongs to."""
    for ev in events:
        session.add(
            OutboxMessage(event_id=ev.event_id, subject=ev.subject_name(), payload=ev.model_dump_json())
        )


PublishRaw = Callable[[str, str, bytes], Awaitable[None]]


class OutboxRelay:
    """Publishes what the outbox holds, as soon as it is told to and on a timer."""

    def __init__(self, db: Database, publish: PublishRaw, batch: int = 500, interval: float = 1.0):
        self._db = db
        self._publish = publish
        self._batch = batch
        self._interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def notify(self) -> None:
        self._wake.set()

    async def flush(self) -> int:
        """Publish everything pending; returns how many events went out."""
        table = OutboxMessage.__table__  # type: ignore[attr-defined]
        sent = 0
        while True:
            async with self._db.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(table.c.id, table.c.subject, table.c.event_id, table.c.payload)
                        .order_by(table.c.id)
                        .limit(self._batch)
                    )
                ).all()
            if not rows:
                return sent
            await asyncio.gather(
                *(self._publish(subject, event_id, payload.encode()) for _, subject, event_id, payload in rows)
            )
            async with self._db.engine.begin() as conn:
                await conn.execute(delete(table).where(table.c.id.in_([r[0] for r in rows])))
            sent += len(rows)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - the relay must survive a broker or db hiccup
                log.exception("outbox relay failed; retrying")
                await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        self.notify()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task:
            await self._task
        try:
            await self.flush()
        except Exception:  # noqa: BLE001
            log.warning("outbox not fully flushed at stop; it will be sent at next start")
