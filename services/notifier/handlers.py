"""Events in, one delivery per (event, channel) out; ``notification.sent`` announces each."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import BaseModel, Field
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notifier.channels import Channel, Notification, PermanentFailure, TransientFailure
from services.notifier.deliveries import Claim, DeliveryLog, Status
from services.notifier.subscriptions import Routing
from services.notifier.tables import CertificateFacts
from shared import logs
from shared.clock import Clock
from shared.events import CertIssued, Event, NotificationFailed, NotificationSent, derived_id
from shared.runtime import ServiceRuntime

log = logging.getLogger("certbus.notifier")


class DeliveryPending(Exception):
    """At least one delivery of the batch has to be tried again later."""


class ListRequest(BaseModel):
    event_id: str | None = None
    subject: str | None = None
    status: str | None = None
    channel: str | None = None
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0)


class NotifierHandlers:
    def __init__(
        self,
        runtime: ServiceRuntime,
        routing: Routing,
        clock: Clock,
        *,
        lease_seconds: float = 120.0,
        concurrency: int = 16,
    ) -> None:
        self._rt = runtime
        self._routing = routing
        self._clock = clock
        self._lease = lease_seconds
        self._slots = asyncio.Semaphore(concurrency)

    async def deliver(self, events: list[Event]) -> None:
        """Deliver each event once to every channel subscribed to it (webhooks, e-mail)."""
        unique = list({ev.event_id: ev for ev in events}.values())
        claimed, busy = await self._claim(unique)
        outcomes = await asyncio.gather(*(self._send(ev, channel) for ev, channel in claimed))
        await self._finish(list(zip(claimed, outcomes, strict=True)))
        retrying = busy + sum(1 for status, _ in outcomes if status == Status.RETRYING)
        if retrying:
            first = next((err for status, err in outcomes if status == Status.RETRYING), None)
            raise DeliveryPending(
                f"{retrying} deliveries to retry: {first or 'in progress elsewhere'}"
            )

    async def _claim(self, events: list[Event]) -> tuple[list[tuple[Event, Channel]], int]:
        """Claim, in one transaction, every delivery the events need; count those busy elsewhere."""
        claimed: list[tuple[Event, Channel]] = []
        busy = 0
        async with self._rt.unit_of_work() as uow:
            facts = await _certificate_facts(uow.session, events)
            deliveries = DeliveryLog(uow.session, self._clock.now())
            await deliveries.prefetch([ev.event_id for ev in events])
            for ev in events:
                view = _with_facts(ev.model_dump(mode="json"), facts)
                channels = self._routing.channels_for(ev.subject_name(), view)
                if not channels:
                    log.info("no channel wants %s %s", ev.subject_name(), ev.event_id)
                for channel in channels:
                    claim = await deliveries.claim(
                        event_id=ev.event_id,
                        channel=channel.name,
                        subject=ev.subject_name(),
                        correlation_id=ev.correlation_id,
                        lease=self._lease,
                    )
                    if claim == Claim.SEND:
                        claimed.append((ev, channel))
                    elif claim == Claim.BUSY:
                        busy += 1
                    else:
                        log.info(
                            "%s %s already delivered to %s",
                            ev.subject_name(),
                            ev.event_id,
                            channel.name,
                        )
        return claimed, busy

    async def _send(self, ev: Event, channel: Channel) -> tuple[Status, str | None]:
        token = logs.correlation_id.set(ev.correlation_id)
        notification = Notification(
            ev.subject_name(), ev.event_id, ev.correlation_id, ev.model_dump(mode="json")
        )
        try:
            async with self._slots:
                await channel.send(notification)
            return Status.SENT, None
        except TransientFailure as exc:
            return Status.RETRYING, str(exc)
        except PermanentFailure as exc:
            return Status.FAILED, str(exc)
        except Exception as exc:  # noqa: BLE001 - a channel's bug is retried, then dead-lettered
            return Status.RETRYING, f"{type(exc).__name__}: {exc}"
        finally:
            logs.correlation_id.reset(token)

    async def _finish(
        self, results: list[tuple[tuple[Event, Channel], tuple[Status, str | None]]]
    ) -> None:
        """Record every outcome and stage notification.sent / .failed, in one transaction."""
        if not results:
            return
        attempts: list[int] = []
        async with self._rt.unit_of_work() as uow:
            deliveries = DeliveryLog(uow.session, self._clock.now())
            await deliveries.prefetch(list({ev.event_id for (ev, _), _ in results}))
            for (ev, channel), (status, error) in results:
                attempts.append(await deliveries.finish(ev.event_id, channel.name, status, error))
                about = {
                    "channel": channel.name,
                    "about_event_id": ev.event_id,
                    "about_subject": ev.subject_name(),
                    "actor": "notifier",
                }
                if status == Status.SENT:
                    uow.emit(
                        ev.caused(
                            NotificationSent,
                            **about,
                            event_id=derived_id("notification.sent", ev.event_id, channel.name),
                        )
                    )
                elif status == Status.FAILED:
                    uow.emit(
                        ev.caused(
                            NotificationFailed,
                            **about,
                            error=error or "",
                            event_id=derived_id("notification.failed", ev.event_id, channel.name),
                        )
                    )
        for ((ev, channel), (status, error)), attempt in zip(results, attempts, strict=True):
            _log_outcome(ev, channel, status, error, attempt)

    async def deliveries_list(self, request: dict[str, Any]) -> dict[str, Any]:
        """The delivery log, newest first, filtered by event, subject, status or channel."""
        req = ListRequest.model_validate(request)
        async with self._rt.db.reading() as session:  # type: ignore[union-attr]
            items, total = await DeliveryLog(session, self._clock.now()).list(**req.model_dump())
        return {"items": items, "total": total}

    async def subscriptions_list(self, _request: dict[str, Any]) -> dict[str, Any]:
        """Which subjects go to which channel, with their owner and template filters."""
        return {"items": self._routing.describe()}


async def _certificate_facts(
    session: AsyncSession, events: list[Event]
) -> dict[str, CertificateFacts]:
    """Remember what issuance says of each certificate; look up the ones events name."""
    wanted = {str(getattr(ev, "cert_id")) for ev in events if getattr(ev, "cert_id", None)}  # noqa: B009
    if not wanted:
        return {}
    query = select(CertificateFacts).where(col(CertificateFacts.cert_id).in_(wanted))
    known = {row.cert_id: row for row in (await session.exec(query)).all()}
    for ev in events:
        if isinstance(ev, CertIssued) and ev.cert_id not in known:
            known[ev.cert_id] = CertificateFacts(
                cert_id=ev.cert_id, owner=ev.owner, template=ev.template, subject_dn=ev.subject_dn
            )
            session.add(known[ev.cert_id])
    return known


def _log_outcome(
    ev: Event, channel: Channel, status: Status, error: str | None, attempt: int
) -> None:
    token = logs.correlation_id.set(ev.correlation_id)
    try:
        subject = ev.subject_name()
        if status == Status.SENT:
            log.info(
                "delivered %s %s to %s (attempt %d)", subject, ev.event_id, channel.name, attempt
            )
        elif status == Status.FAILED:
            log.error("gave up on %s %s to %s: %s", subject, ev.event_id, channel.name, error)
        else:
            log.warning(
                "delivery of %s %s to %s failed (attempt %d): %s",
                subject,
                ev.event_id,
                channel.name,
                attempt,
                error,
            )
    finally:
        logs.correlation_id.reset(token)


def _with_facts(view: dict[str, Any], facts: dict[str, CertificateFacts]) -> dict[str, Any]:
    known = facts.get(view.get("cert_id") or "")
    if known is not None:
        for name in ("owner", "template", "subject_dn"):
            if view.get(name) is None:
                view[name] = getattr(known, name)
    return view
