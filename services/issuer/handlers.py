"""Event handlers: a batch in, the domain called, rows and events committed together."""

from __future__ import annotations

import json
import logging
from typing import Any

from services.issuer import errors, records
from services.issuer.batch import BatchIssuer, Work, rejected
from services.issuer.crlpub import CrlPublisher
from services.issuer.errors import Rejection
from services.issuer.issuance import (
    Enrollment,
    Issuer,
    renewal_enrollment,
)
from shared.events import (
    CertRejected,
    CertReleased,
    CertRenewalRequested,
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


class IssuerHandlers:
    def __init__(self, rt: ServiceRuntime, issuer: Issuer, crls: CrlPublisher) -> None:
        self.rt = rt
        self.issuer = issuer
        self.crls = crls
        self.batch = BatchIssuer(rt, issuer)

    async def cert_requested(self, events: list[CertRequested]) -> None:
        """Validate each CSR against its template and issue, or reject with a reason."""
        work = [
            Work(enrollment_from(ev), ev, {"target": ev.target, "job_id": ev.job_id}, ev.renewal_of)
            for ev in events
        ]
        await self.batch.issue(work)

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
                            Work(placeholder, ev),
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
                work.append(Work(req, ev, renewal_of=previous["cert_id"]))
        await self.batch.issue(work, refused)

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

    def _reading(self) -> Any:
        assert self.rt.db is not None
        return self.rt.db.session()
