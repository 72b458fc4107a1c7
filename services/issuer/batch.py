"""Issuing many requests at once, from a bus batch or from concurrent API calls.

Policy and signing run outside any transaction; one short transaction inserts the
certificates and stages their events. The unique constraints on request id and on
(CA, serial) catch a concurrent replica; the caller then retries one by one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from services.issuer import errors, records
from services.issuer.errors import Rejection
from services.issuer.issuance import Enrollment, Issuer, issued_event_id, issued_fields
from services.issuer.x509build import LeafRequest
from shared.events import CertIssued, CertRejected, CertRenewed, Event, derived_id
from shared.runtime import ServiceRuntime


@dataclass
class Work:
    """One request: what it asks for, the event that asked (none for API calls), extras."""

    enrollment: Enrollment
    source: Event | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    renewal_of: str | None = None
    server_key: CertificatePublicKeyTypes | None = None


@dataclass
class Outcome:
    fields: dict[str, Any] | None = None
    rejection: Rejection | None = None
    certificate: x509.Certificate | None = None
    leaf: LeafRequest | None = None


def rejected(work: Work, exc: Rejection) -> CertRejected:
    src, req = work.source, work.enrollment
    assert src is not None
    return src.caused(
        CertRejected,
        event_id=derived_id("cert.rejected", src.event_id),
        request_id=req.request_id,
        code=exc.code,
        message=exc.message,
        owner=req.owner,
        device=req.device,
        job_id=work.extra.get("job_id"),
    )


class BatchIssuer:
    """``inline_limit``: up to that many certificates are signed inside the one transaction
    (one lock instead of two on SQLite); bigger batches sign between a read and a write."""

    def __init__(self, rt: ServiceRuntime, issuer: Issuer, inline_limit: int = 32) -> None:
        self.rt = rt
        self.issuer = issuer
        self.inline_limit = inline_limit

    async def issue(self, batch: list[Work], also: list[Event] | None = None) -> list[Outcome]:
        """An outcome per request, in order; rejections of bus requests become events."""
        first: dict[str, int] = {}
        for i, w in enumerate(batch):
            first.setdefault(w.enrollment.request_id, i)
        outcomes: dict[int, Outcome] = {}
        prepared: list[tuple[int, Work, LeafRequest]] = []
        for i in sorted(set(first.values())):
            w = batch[i]
            try:
                prepared.append((i, w, self._prepare(w)))
            except Rejection as exc:
                outcomes[i] = Outcome(rejection=exc)
        round_ = _Round(batch, first, outcomes, also)
        if len(prepared) <= self.inline_limit:
            async with self.rt.unit_of_work() as uow:
                fresh, serials = await round_.look_up(uow.session, prepared)
                self._sign(round_, fresh, serials)
                await round_.record(uow)
        else:
            assert self.rt.db is not None
            async with self.rt.db.session() as session:
                fresh, serials = await round_.look_up(session, prepared)
            self._sign(round_, fresh, serials)
            if round_.staged:
                async with self.rt.unit_of_work() as uow:
                    await round_.record(uow)
        return [outcomes[first[w.enrollment.request_id]] for w in batch]

    def _sign(
        self, round_: _Round, fresh: list[tuple[int, Work, LeafRequest]], serials: list[int]
    ) -> None:
        for (i, w, leaf), serial in zip(fresh, serials, strict=True):
            cert = self.issuer.sign(leaf, serial)
            fields = {**issued_fields(cert, leaf, w.enrollment), "renewal_of": w.renewal_of}
            issued = self._announce(w, fields)
            body = issued.model_dump_json()
            round_.rows.append(records.issued_values(fields, body))
            round_.staged.append((issued, body))
            if w.renewal_of:
                link = issued.caused(
                    CertRenewed,
                    event_id=derived_id("cert.renewed", w.enrollment.request_id),
                    old_cert_id=w.renewal_of,
                    new_cert_id=fields["cert_id"],
                )
                round_.staged.append((link, link.model_dump_json()))
            round_.outcomes[i] = Outcome(
                fields=records.without_envelope(json.loads(body)), certificate=cert, leaf=leaf
            )

    def _prepare(self, w: Work) -> LeafRequest:
        if w.server_key is None and not w.enrollment.csr:
            raise Rejection(
                errors.CSR_REQUIRED,
                "a CSR is required: keys made on the server never travel on the bus",
            )
        return self.issuer.prepare(w.enrollment, server_key=w.server_key)

    def _announce(self, w: Work, fields: dict[str, Any]) -> CertIssued:
        event_id = issued_event_id(w.enrollment.request_id)
        if w.source is not None:
            return w.source.caused(CertIssued, event_id=event_id, **w.extra, **fields)
        return CertIssued(event_id=event_id, actor=w.enrollment.actor, **w.extra, **fields)


class GroupCommit:
    """Concurrent single requests, issued together: one transaction per round, not per call.

    A round starts ``window`` seconds after the first call, so the calls in flight join it;
    calls arriving during a round wait for the next one.
    """

    def __init__(
        self,
        issue: Callable[[list[Work]], Awaitable[list[Outcome]]],
        limit: int = 256,
        window: float = 0.002,
    ) -> None:
        self._issue = issue
        self._limit = limit
        self._window = window
        self._queue: list[tuple[Work, asyncio.Future[Outcome]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, work: Work) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(self._window)
        while self._queue:
            round_, self._queue = self._queue[: self._limit], self._queue[self._limit :]
            try:
                outcomes = await self._issue([w for w, _ in round_])
            except Exception:  # noqa: BLE001 - a failed round is retried call by call
                outcomes = []
                for w, _ in round_:
                    try:
                        outcomes.extend(await self._issue([w]))
                    except Exception as exc:  # noqa: BLE001
                        outcomes.append(Outcome(rejection=_internal(exc)))
            for (_, future), outcome in zip(round_, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)


class _Round:
    """What one call of ``BatchIssuer.issue`` accumulates: outcomes, rows and events."""

    def __init__(
        self,
        batch: list[Work],
        first: dict[str, int],
        outcomes: dict[int, Outcome],
        also: list[Event] | None,
    ) -> None:
        self.batch, self.first, self.outcomes = batch, first, outcomes
        self.rows: list[dict[str, Any]] = []
        self.staged: list[tuple[Event, str]] = [(e, e.model_dump_json()) for e in also or []]

    async def look_up(
        self, session: Any, prepared: list[tuple[int, Work, LeafRequest]]
    ) -> tuple[list[tuple[int, Work, LeafRequest]], list[int]]:
        """Answer repeats from the records, reject refusals, pick unused serials for the rest."""
        done = await records.issued_for(session, self.first)
        fresh = [(i, w, leaf) for i, w, leaf in prepared if w.enrollment.request_id not in done]
        serials = await records.fresh_serials(
            session, [(leaf.ca.name, x509.random_serial_number()) for _, _, leaf in fresh]
        )
        for i in self.first.values():
            work = self.batch[i]
            if work.enrollment.request_id in done:
                self.outcomes[i] = Outcome(
                    fields=records.issued_record(done[work.enrollment.request_id])
                )
            elif i in self.outcomes and work.source is not None:
                event = rejected(work, self.outcomes[i].rejection)  # type: ignore[arg-type]
                self.staged.append((event, event.model_dump_json()))
        return fresh, serials

    async def record(self, uow: Any) -> None:
        await records.add_issued(uow.session, self.rows)
        await records.emit_bulk(uow, self.staged)


def _internal(exc: Exception) -> Rejection:
    return Rejection("internal", f"issuance failed: {type(exc).__name__}: {exc}", 500)
