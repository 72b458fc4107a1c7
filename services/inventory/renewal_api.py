"""Renewal operations (``rpc.inventory.renewals.*``) and the lifecycle policy's own renewals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import func
from sqlmodel import select

from services.inventory import query, renewal
from services.inventory.reads import Reads
from services.inventory.tables import Certificate, Renewal
from shared.bus import RpcError
from shared.clock import utcnow
from shared.events import AgentJob, Event
from shared.runtime import ServiceRuntime

log = logging.getLogger("certbus.inventory")

MAX_CERTIFICATES = 10000


class RenewalApi:
    def __init__(self, rt: ServiceRuntime, reads: Reads) -> None:
        self.rt = rt
        self.db = reads

    async def renewals_start(self, req: dict[str, Any]) -> dict[str, Any]:
        """Renew the certificates a query (or a list of ids) selects, wherever each is
        installed; ``dry_run`` only shows the plan. Asking again resumes, never repeats."""
        text = str(req.get("query") or "").strip()
        ids = [str(i) for i in req.get("cert_ids") or []]
        if not text and not ids:
            raise RpcError("invalid_request", "give a query or cert_ids", 422)
        limit = max(1, min(int(req.get("limit") or MAX_CERTIFICATES), MAX_CERTIFICATES))
        try:
            condition = query.compile_query(text) if text else None
        except query.QueryError as exc:
            raise RpcError("invalid_query", str(exc), 422) from exc
        select_certs = select(Certificate)
        if condition is not None:
            select_certs = select_certs.where(condition)
        if ids:
            select_certs = select_certs.where(Certificate.cert_id.in_(ids))  # type: ignore[attr-defined]
        select_certs = select_certs.order_by(Certificate.cert_id).limit(limit)
        dry_run = bool(req.get("dry_run"))
        async with self.rt.unit_of_work() as uow:
            certs = list((await uow.session.exec(select_certs)).all())
            missing = sorted(set(ids) - {c.cert_id for c in certs})
            planned, skipped = await renewal.plan(uow.session, certs)
            sent = 0
            if not dry_run:
                cause = Event(actor=str(req.get("actor") or "api"))
                events = await renewal.start(uow.session, cause, planned, req.get("reason"))
                uow.emit(*events)
                sent = sum(isinstance(e, AgentJob) for e in events)
        return {
            "dry_run": dry_run,
            "certificates": len(certs),
            "planned": [renewal.planned_json(p) for p in planned],
            "skipped": [renewal.skipped_json(s) for s in skipped]
            + [{"cert_id": i, "reason": "no such certificate"} for i in missing],
            "jobs_sent": sent,
        }

    async def renewals_list(self, req: dict[str, Any]) -> dict[str, Any]:
        """Renewals and their progress: planned, issued, installed, failed."""
        limit = max(1, min(int(req.get("limit") or 100), 1000))
        offset = max(0, int(req.get("offset") or 0))
        conditions = []
        for key, column in (("status", Renewal.status), ("cert_id", Renewal.old_cert_id),
                            ("machine", Renewal.machine)):  # fmt: skip
            if req.get(key):
                conditions.append(column == str(req[key]))
        async with self.db.session() as s:
            rows = (
                await s.exec(
                    select(Renewal)
                    .where(*conditions)
                    .order_by(Renewal.created_at.desc(), Renewal.request_id)  # type: ignore[attr-defined]
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            counts = (
                await s.exec(
                    select(Renewal.status, func.count()).where(*conditions).group_by(Renewal.status)
                )
            ).all()
        return {
            "items": [renewal.to_json(r) for r in rows],
            "progress": {status: int(n) for status, n in counts},
            "limit": limit,
            "offset": offset,
        }

    def register(self) -> None:
        self.rt.rpc("renewals.start", self.renewals_start)
        self.rt.rpc("renewals.list", self.renewals_list)


class AutoRenewal:
    """The lifecycle policy: certificates installed by certbus are renewed ``before_days``
    before they expire, checked every ``every_seconds``. Several replicas may run it: the
    renewals' derived ids make a second pass a no-op."""

    def __init__(self, rt: ServiceRuntime, before_days: int, every_seconds: float) -> None:
        self.rt = rt
        self.before_days = before_days
        self.every_seconds = every_seconds
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def run_once(self, batch: int = 500) -> int:
        async with self.rt.unit_of_work() as uow:
            certs = await renewal.due(uow.session, self.before_days, utcnow(), batch)
            planned, _ = await renewal.plan(uow.session, certs)
            cause = Event(actor="lifecycle-policy")
            events = await renewal.start(uow.session, cause, planned, "expiring")
            uow.emit(*events)
            jobs = [e for e in events if isinstance(e, AgentJob)]
        if jobs:
            log.info("renewing %d expiring certificate(s): %d job(s)", len(certs), len(jobs))
        return len(jobs)

    async def _loop(self) -> None:
        # Stopping is a flag checked between rounds, not a cancellation: a round in the middle
        # of its transaction finishes (or rolls back) before the database is closed.
        while not self._stopping.is_set():
            try:
                while not self._stopping.is_set() and await self.run_once() > 0:
                    pass
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("automatic renewal failed; trying again later")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.every_seconds)

    async def start(self) -> None:
        if self.before_days > 0 and self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None
