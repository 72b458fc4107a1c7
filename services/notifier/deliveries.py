"""The delivery log: which event went to which channel, when, after how many attempts.

A delivery is claimed before it is sent, with a lease: a second worker that meets a live
claim backs off instead of sending in parallel, and a claim whose worker died expires. Once a
delivery is marked sent it is never sent again, whatever the bus redelivers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notifier.tables import Delivery


class Status(StrEnum):
    SENDING = "sending"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"


class Claim(StrEnum):
    SEND = "send"
    ALREADY_DONE = "already_done"
    BUSY = "busy"


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class DeliveryLog:
    def __init__(self, session: AsyncSession, now: datetime) -> None:
        self._s = session
        self._now = now
        self._rows: dict[tuple[str, str], Delivery] | None = None

    async def prefetch(self, event_ids: list[str]) -> None:
        """Load (and lock) every delivery of these events at once, for a batch of claims."""
        query = select(Delivery).where(col(Delivery.event_id).in_(event_ids)).with_for_update()
        self._rows = {(r.event_id, r.channel): r for r in (await self._s.exec(query)).all()}

    async def _find(self, event_id: str, channel: str) -> Delivery | None:
        if self._rows is not None:
            return self._rows.get((event_id, channel))
        query = select(Delivery).where(Delivery.event_id == event_id, Delivery.channel == channel)
        return (await self._s.exec(query.with_for_update())).first()

    async def claim(
        self, *, event_id: str, channel: str, subject: str, correlation_id: str, lease: float
    ) -> Claim:
        row = await self._find(event_id, channel)
        if row is None:
            row = Delivery(
                event_id=event_id,
                channel=channel,
                subject=subject,
                correlation_id=correlation_id,
                created_at=self._now,
            )
            if self._rows is not None:
                self._rows[(event_id, channel)] = row
        elif row.status in (Status.SENT, Status.FAILED):
            return Claim.ALREADY_DONE
        elif row.status == Status.SENDING and (_utc(row.lease_until) or self._now) > self._now:
            return Claim.BUSY
        row.status = Status.SENDING
        row.attempts += 1
        row.lease_until = self._now + timedelta(seconds=lease)
        self._s.add(row)
        return Claim.SEND

    async def finish(
        self, event_id: str, channel: str, status: Status, error: str | None = None
    ) -> int:
        """Record the outcome of an attempt; returns the number of attempts so far."""
        row = await self._find(event_id, channel)
        assert row is not None, "a delivery is claimed before it finishes"
        row.status = status
        row.lease_until = None
        row.last_error = error
        if status == Status.SENT:
            row.sent_at = self._now
        self._s.add(row)
        return row.attempts

    async def list(
        self,
        *,
        event_id: str | None = None,
        subject: str | None = None,
        status: str | None = None,
        channel: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        conditions = [
            column == value
            for column, value in (
                (Delivery.event_id, event_id),
                (Delivery.subject, subject),
                (Delivery.status, status),
                (Delivery.channel, channel),
            )
            if value is not None
        ]
        total = (
            await self._s.exec(select(func.count()).select_from(Delivery).where(*conditions))
        ).one()
        rows = (
            await self._s.exec(
                select(Delivery)
                .where(*conditions)
                .order_by(col(Delivery.id).desc())
                .offset(offset)
                .limit(limit)
            )
        ).all()
        return [describe(r) for r in rows], int(total)


def describe(row: Delivery) -> dict[str, Any]:
    def iso(moment: datetime | None) -> str | None:
        moment = _utc(moment)
        return moment.isoformat() if moment else None

    return {
        "id": row.id,
        "event_id": row.event_id,
        "channel": row.channel,
        "subject": row.subject,
        "correlation_id": row.correlation_id,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "created_at": iso(row.created_at),
        "sent_at": iso(row.sent_at),
    }
