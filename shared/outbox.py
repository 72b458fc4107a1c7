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
        sent = 0
        while True:
            async with self._db.session() as session:
                rows = (
                    await session.exec(
                        select(OutboxMessage).order_by(OutboxMessage.id).limit(self._batch)  # type: ignore[arg-type]
                    )
                ).all()
            if not rows:
                return sent
            rows = [r[0] if not isinstance(r, OutboxMessage) else r for r in rows]
            await asyncio.gather(
                *(self._publish(r.subject, r.event_id, r.payload.encode()) for r in rows)
            )
            async with self._db.transaction() as session:
                await session.exec(delete(OutboxMessage).where(OutboxMessage.id.in_([r.id for r in rows])))  # type: ignore[union-attr,call-overload]
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
