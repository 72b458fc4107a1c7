"""Event handlers: a batch in, the domain called, rows and events committed together."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from services.issuer import errors, records
from services.issuer.crlpub import CrlPublisher
from services.issuer.errors import Rejection
from services.issuer.issuance import (
    Enrollment,
    Issuer,
    issued_event_id,
    issued_fields,
    renewal_enrollment,
)
from services.issuer.x509build import LeafRequest
from shared.events import (
    CertIssued,
    CertRejected,
    CertReleased,
    CertRenewalRequested,
    CertRenewed,
    CertRequested,
    CertRevoked,
    Event,
    derived_id,
)
from shared.runtime import ServiceRuntime

log = logging.getLogger("certbus.issuer.handlers")


def enrollment_from(ev: CertRequested) -> Enrollment:
    return Enrollment(
        request_id=ev.request_id,
        template=ev.template,
        csr=ev.csr_pem,
        subject_dn=ev.subject_dn,
        sans=list(ev.sans),
        owner=ev.owner,
        device=ev.device,
        actor=ev.actor,
        metadata=dict(ev.metadata),
        ca=ev.ca,
    )


@dataclass
class Work:
    """One request of a batch: the asking event, the enrollment, what the answer copies."""

    source: Event
    enrollment: Enrollment
    extra: dict[str, Any]
    renewal_of: str | None = None


def rejected(work: Work, exc: Rejection) -> CertRejected:
    src = work.source
    return src.caused(
        CertRejected,
        event_id=derived_id("cert.rejected", src.event_id),
        request_id=work.enrollment.request_id,
        code=exc.code,
        message=exc.message,
        owner=work.enrollment.owner,
        device=work.enrollment.device,
        job_id=work.extra.get("job_id"),
    )


class IssuerHandlers:
    def __init__(self, rt: ServiceRuntime, issuer: Issuer, crls: CrlPublisher) -> None:
        self.rt = rt
        self.issuer = issuer
        self.crls = crls

    async def cert_requested(self, events: list[CertRequested]) -> None:
        """Validate each CSR against its template and issue, or reject with a reason."""
        work = [
            Work(ev, enrollment_from(ev), {"target": ev.target, "job_id": ev.job_id}, ev.renewal_of)
            for ev in events
        ]
        await self._issue_all(work)

    async def renewal_requested(self, events: list[CertRenewalRequested]) -> None:
        """Renew with the CSR the request carries: same subject, SANs and template, a new key."""
        work: list[Work] = []
        refused: list[Event] = []
        async with self._reading() as session:
            for ev in events:
                old = await records.get_issued(session, ev.cert_id)
                if old is None:
                    placeholder = Enrollment(ev.request_id, ev.template or "", owner=ev.owner)
                    refused.append(
                        rejected(
                            Work(ev, placeholder, {}),
                            Rejection(
                                errors.NOT_FOUND, f"no certificate {ev.cert_id!r} was issued here"
                            ),
                        )
                    )
                    continue
                previous = records.issued_record(old)
                req = renewal_enrollment(
                    previous,
                    request_id=ev.request_id,
                    template=ev.template,
                    ca=ev.ca,
                    csr=ev.csr_pem,
                    actor=ev.actor,
                )
                work.append(Work(ev, req, {}, previous["cert_id"]))
        await self._issue_all(work, refused)

    async def _issue_all(self, batch: list[Work], out: list[Event] | None = None) -> None:
        """Check, sign and record a batch, holding the write transaction only to insert.

        Policy and signing run outside any transaction; the unique constraints on request id
        and (CA, serial) catch a concurrent replica, and the batch is then retried one by one.
        """
        out = list(out or [])
        unique = list({w.enrollment.request_id: w for w in reversed(batch)}.values())[::-1]
        prepared: list[tuple[Work, LeafRequest]] = []
        for w in unique:
            try:
                if not w.enrollment.csr:
                    raise Rejection(
                        errors.CSR_REQUIRED,
                        "a CSR is required: keys made on the server never travel on the bus",
                    )
                prepared.append((w, self.issuer.prepare(w.enrollment)))
            except Rejection as exc:
                out.append(rejected(w, exc))
        async with self._reading() as session:
            done = await records.issued_for(session, (w.enrollment.request_id for w in unique))
            accepted = [(w, leaf) for w, leaf in prepared if w.enrollment.request_id not in done]
            serials = await records.fresh_serials(
                session, [(leaf.ca.name, x509.random_serial_number()) for _, leaf in accepted]
            )
        staged = [
            (e, e.model_dump_json()) for e in out if getattr(e, "request_id", None) not in done
        ]
        rows: list[dict[str, Any]] = []
        for (w, leaf), serial in zip(accepted, serials, strict=True):
            cert = self.issuer.sign(leaf, serial)
            fields = {**issued_fields(cert, leaf, w.enrollment), "renewal_of": w.renewal_of}
            issued = w.source.caused(
                CertIssued, event_id=issued_event_id(w.enrollment.request_id), **w.extra, **fields
            )
            body = issued.model_dump_json()
            rows.append(records.issued_values(fields, body))
            staged.append((issued, body))
            if w.renewal_of:
                link = issued.caused(
                    CertRenewed,
                    event_id=derived_id("cert.renewed", w.enrollment.request_id),
                    old_cert_id=w.renewal_of,
                    new_cert_id=fields["cert_id"],
                )
                staged.append((link, link.model_dump_json()))
        if not staged:
            return
        async with self.rt.unit_of_work() as uow:
            await records.add_issued(uow.session, rows)
            await records.emit_bulk(uow, staged)

    def _reading(self) -> Any:
        assert self.rt.db is not None
        return self.rt.db.session()

    async def cert_requested_invalid(self, data: bytes, subject: str, reason: str) -> None:
        """A request that is not a valid event is rejected when it names its request id."""
        try:
            body: Any = json.loads(data)
        except ValueError:
            body = None
        request_id = body.get("request_id") if isinstance(body, dict) else None
        if not isinstance(request_id, str) or not request_id:
            log.error("dropping a malformed %s without a request id: %s", subject, reason)
            return
        ev = CertRejected(
            event_id=derived_id(
                "cert.rejected.malformed", request_id, data.decode(errors="replace")
            ),
            correlation_id=str(body.get("correlation_id") or "") or request_id,
            causation_id=body.get("event_id") if isinstance(body.get("event_id"), str) else None,
            request_id=request_id,
            code=errors.MALFORMED_EVENT,
            message=f"the {subject} event is not valid: {reason}",
        )
        async with self.rt.unit_of_work() as uow:
            uow.emit(ev)

    async def cert_revoked(self, events: list[CertRevoked]) -> None:
        """Put revoked serials of this issuer's CAs on their next CRL."""
        async with self.rt.unit_of_work() as uow:
            changed = await records.record_revocations(uow.session, events, self._ca_names())
        if changed:
            self.crls.notify()

    async def cert_released(self, events: list[CertReleased]) -> None:
        """Take released holds off the CRL (and list them as removeFromCRL in the delta)."""
        async with self.rt.unit_of_work() as uow:
            changed = await records.record_releases(uow.session, events, self._ca_names())
        if changed:
            self.crls.notify()

    def _ca_names(self) -> set[str]:
        return {ca.name for ca in self.issuer.cas.all()}
