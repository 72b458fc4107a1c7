"""Transactional outbox: a state change and the event announcing it commit together.

A service adds its events to the outbox inside the same transaction as its own rows; the relay
publishes them to JetStream (the event id is the ``Nats-Msg-Id``, so a publish repeated after a
crash is dropped by the stream's duplicate window) and only then deletes them. A process that
dies between its commit and its publish sends the event when it starts again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from nats.errors import BadSubjectError, MaxPayloadError
from sqlalchemy import Column, Row, Text, delete, insert, select
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import subjects
from shared.db import Database, table_of
from shared.events import Event

log = logging.getLogger("certbus.outbox")


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(index=True)
    subject: str
    payload: str = Field(sa_column=Column(Text, nullable=False))


class ParkedOutboxMessage(SQLModel, table=True):
    """An event the bus refused for good (too large, bad subject): kept here, never dropped."""

    __tablename__ = "outbox_parked"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(index=True)
    subject: str
    payload: str = Field(sa_column=Column(Text, nullable=False))
    reason: str


# What retrying cannot cure; anything else (a time-out, no connection) is retried.
PERMANENT_PUBLISH_ERRORS = (MaxPayloadError, BadSubjectError)


def stage(session: AsyncSession, events: Iterable[Event]) -> None:
    """Add events to the outbox of the transaction ``session`` belongs to."""
    for ev in events:
        session.add(
            OutboxMessage(
                event_id=ev.event_id, subject=ev.subject_name(), payload=ev.model_dump_json()
            )
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
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def notify(self) -> None:
        self._wake.set()

    async def flush(self) -> int:
        """Publish everything pending; returns how many events went out."""
        async with self._flushing:  # one flush at a time: the timer's and an explicit one
            return await self._flush()

    async def _flush(self) -> int:
        table = table_of(OutboxMessage)
        sent = 0
        while True:
            async with self._db.engine.connect() as conn:
                # (id, subject, event_id, payload)
                rows: Sequence[Row[int, str, str, str]] = (
                    await conn.execute(
                        select(table.c.id, table.c.subject, table.c.event_id, table.c.payload)
                        .order_by(table.c.id)
                        .limit(self._batch)
                    )
                ).all()
            if not rows:
                return sent
            results = await asyncio.gather(
                *(
                    self._publish(subject, event_id, payload.encode())
                    for _, subject, event_id, payload in rows
                ),
                return_exceptions=True,
            )
            published = [row for row, r in zip(rows, results, strict=True) if r is None]
            refused = [
                (row, r)
                for row, r in zip(rows, results, strict=True)
                if isinstance(r, PERMANENT_PUBLISH_ERRORS)
            ]
            for row, exc in refused:
                await self._park(row, exc)
            async with self._db.engine.begin() as conn:
                if refused:
                    await conn.execute(
                        insert(table_of(ParkedOutboxMessage)),
                        [
                            {
                                "event_id": row[2],
                                "subject": row[1],
                                "payload": row[3],
                                "reason": f"{type(exc).__name__}: {exc}",
                            }
                            for row, exc in refused
                        ],
                    )
                done = [row[0] for row in published] + [row[0] for row, _ in refused]
                await conn.execute(delete(table).where(table.c.id.in_(done)))
            sent += len(published)
            failed = len(rows) - len(published) - len(refused)
            if failed:
                # Keep the rest for the next round instead of spinning on a broker that is away.
                first = next(
                    r
                    for r in results
                    if r is not None and not isinstance(r, PERMANENT_PUBLISH_ERRORS)
                )
                raise RuntimeError(f"{failed} of {len(rows)} events not published: {first!r}")

    async def _park(self, row: Row[int, str, str, str], exc: BaseException) -> None:
        """Say on the dead-letter subject that an event was refused; the event stays in the db."""
        _, subject, event_id, payload = row
        notice = {
            "event_id": event_id,
            "subject": subject,
            "bytes": len(payload),
            "reason": f"{type(exc).__name__}: {exc}",
            "kept_in": "outbox_parked",
        }
        log.error(
            "the bus refused event %s on %s for good (%s); parked in outbox_parked",
            event_id,
            subject,
            exc,
        )
        try:
            await self._publish(
                subjects.dead_letter(subject), f"dlq-outbox-{event_id}", json.dumps(notice).encode()
            )
        except Exception:  # noqa: BLE001 - the row is kept either way
            log.exception("could not announce the parked event %s", event_id)

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
