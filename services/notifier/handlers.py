"""Events in, one delivery per (event, channel) out; ``notification.sent`` announces each."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import BaseModel, Field
from sqlmodel import col, select

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
        facts = await self._certificate_facts(unique)
        work = []
        for ev in unique:
            view = _with_facts(ev.model_dump(mode="json"), facts)
            channels = self._routing.channels_for(ev.subject_name(), view)
            if not channels:
                log.info("no channel wants %s %s", ev.subject_name(), ev.event_id)
            work.extend(self._deliver(ev, channel) for channel in channels)
        outcomes = await asyncio.gather(*work, return_exceptions=True)
        pending = [o for o in outcomes if isinstance(o, BaseException)]
        if pending:
            raise DeliveryPending(f"{len(pending)} deliveries to retry: {pending[0]}")

    async def _certificate_facts(self, events: list[Event]) -> dict[str, CertificateFacts]:
        """Remember what issuance says of each certificate; look up the ones events name."""
        async with self._rt.unit_of_work() as uow:
            for ev in events:
                if isinstance(ev, CertIssued) and not await uow.session.get(
                    CertificateFacts, ev.cert_id
                ):
                    uow.session.add(
                        CertificateFacts(
                            cert_id=ev.cert_id,
                            owner=ev.owner,
                            template=ev.template,
                            subject_dn=ev.subject_dn,
                        )
                    )
            await uow.session.flush()
            wanted = {str(ev.cert_id) for ev in events if getattr(ev, "cert_id", None)}
            if not wanted:
                return {}
            rows = (
                await uow.session.exec(
                    select(CertificateFacts).where(col(CertificateFacts.cert_id).in_(wanted))
                )
            ).all()
        return {row.cert_id: row for row in rows}

    async def _deliver(self, ev: Event, channel: Channel) -> None:
        token = logs.correlation_id.set(ev.correlation_id)
        try:
            async with self._slots:
                await self._deliver_once(ev, channel)
        finally:
            logs.correlation_id.reset(token)

    async def _deliver_once(self, ev: Event, channel: Channel) -> None:
        subject = ev.subject_name()
        async with self._rt.unit_of_work() as uow:
            claim = await DeliveryLog(uow.session, self._clock.now()).claim(
                event_id=ev.event_id,
                channel=channel.name,
                subject=subject,
                correlation_id=ev.correlation_id,
                lease=self._lease,
            )
        if claim == Claim.ALREADY_DONE:
            log.info("%s %s already delivered to %s", subject, ev.event_id, channel.name)
            return
        if claim == Claim.BUSY:
            raise TransientFailure(
                f"{channel.name} delivery of {ev.event_id} is in progress elsewhere"
            )
        notification = Notification(
            subject, ev.event_id, ev.correlation_id, ev.model_dump(mode="json")
        )
        try:
            await channel.send(notification)
        except TransientFailure as exc:
            await self._finish(ev, channel, Status.RETRYING, str(exc))
            raise
        except PermanentFailure as exc:
            await self._finish(ev, channel, Status.FAILED, str(exc))
            return
        except Exception as exc:
            await self._finish(ev, channel, Status.RETRYING, f"{type(exc).__name__}: {exc}")
            raise
        await self._finish(ev, channel, Status.SENT)

    async def _finish(
        self, ev: Event, channel: Channel, status: Status, error: str | None = None
    ) -> None:
        subject = ev.subject_name()
        async with self._rt.unit_of_work() as uow:
            attempts = await DeliveryLog(uow.session, self._clock.now()).finish(
                ev.event_id, channel.name, status, error
            )
            about = {
                "channel": channel.name,
                "about_event_id": ev.event_id,
                "about_subject": subject,
            }
            if status == Status.SENT:
                uow.emit(
                    ev.caused(
                        NotificationSent,
                        actor="notifier",
                        event_id=derived_id("notification.sent", ev.event_id, channel.name),
                        **about,
                    )
                )
            elif status == Status.FAILED:
                uow.emit(
                    ev.caused(
                        NotificationFailed,
                        actor="notifier",
                        error=error or "",
                        event_id=derived_id("notification.failed", ev.event_id, channel.name),
                        **about,
                    )
                )
        if status == Status.SENT:
            log.info(
                "delivered %s %s to %s (attempt %d)", subject, ev.event_id, channel.name, attempts
            )
        elif status == Status.FAILED:
            log.error("gave up on %s %s to %s: %s", subject, ev.event_id, channel.name, error)
        else:
            log.warning(
                "delivery of %s %s to %s failed (attempt %d): %s",
                subject,
                ev.event_id,
                channel.name,
                attempts,
                error,
            )

    async def deliveries_list(self, request: dict[str, Any]) -> dict[str, Any]:
        """The delivery log, newest first, filtered by event, subject, status or channel."""
        req = ListRequest.model_validate(request)
        async with self._rt.db.reading() as session:  # type: ignore[union-attr]
            items, total = await DeliveryLog(session, self._clock.now()).list(**req.model_dump())
        return {"items": items, "total": total}

    async def subscriptions_list(self, _request: dict[str, Any]) -> dict[str, Any]:
        """Which subjects go to which channel, with their owner and template filters."""
        return {"items": self._routing.describe()}


def _with_facts(view: dict[str, Any], facts: dict[str, CertificateFacts]) -> dict[str, Any]:
    known = facts.get(view.get("cert_id") or "")
    if known is not None:
        for name in ("owner", "template", "subject_dn"):
            if view.get(name) is None:
                view[name] = getattr(known, name)
    return view
