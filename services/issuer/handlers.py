"""Event handlers: a batch in, the domain called, rows and events committed together."""

from __future__ import annotations

import json
import logging
from typing import Any

from cryptography import x509

from services.issuer import errors, records
from services.issuer.crlpub import CrlPublisher
from services.issuer.errors import Rejection
from services.issuer.issuance import Enrollment, Issuer, issued_event_id, issued_fields
from shared.events import CertIssued, CertRejected, CertReleased, CertRequested, CertRevoked, derived_id
from shared.runtime import ServiceRuntime

log = logging.getLogger("certbus.issuer.handlers")


def enrollment_from(ev: CertRequested) -> Enrollment:
    return Enrollment(
        request_id=ev.request_id, template=ev.template, csr=ev.csr_pem, subject_dn=ev.subject_dn,
        sans=list(ev.sans), owner=ev.owner, device=ev.device, actor=ev.actor,
        metadata=dict(ev.metadata), ca=ev.ca,
    )


def rejected(ev: CertRequested, exc: Rejection) -> CertRejected:
    return ev.caused(
        CertRejected, event_id=derived_id("cert.rejected", ev.event_id), request_id=ev.request_id,
        code=exc.code, message=exc.message, owner=ev.owner, device=ev.device, job_id=ev.job_id,
    )


class IssuerHandlers:
    def __init__(self, rt: ServiceRuntime, issuer: Issuer, crls: CrlPublisher) -> None:
        self.rt = rt
        self.issuer = issuer
        self.crls = crls

    async def cert_requested(self, events: list[CertRequested]) -> None:
        """Validate each CSR against its template and issue, or reject with a reason."""
        unique = list({ev.request_id: ev for ev in reversed(events)}.values())[::-1]
        async with self.rt.unit_of_work() as uow:
            done = await records.issued_for(uow.session, (e.request_id for e in unique))
            accepted = []
            for ev in unique:
                if ev.request_id in done:
                    continue
                try:
                    accepted.append((ev, self.issuer.prepare(enrollment_from(ev))))
                except Rejection as exc:
                    uow.emit(rejected(ev, exc))
            serials = await records.fresh_serials(
                uow.session, [(leaf.ca.name, x509.random_serial_number()) for _, leaf in accepted]
            )
            for (ev, leaf), serial in zip(accepted, serials, strict=True):
                cert = self.issuer.sign(leaf, serial)
                fields = issued_fields(cert, leaf, enrollment_from(ev))
                uow.session.add(records.issued_row(fields))
                uow.emit(ev.caused(
                    CertIssued, event_id=issued_event_id(ev.request_id), target=ev.target,
                    job_id=ev.job_id, renewal_of=ev.renewal_of, **fields,
                ))

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
            event_id=derived_id("cert.rejected.malformed", request_id, data.decode(errors="replace")),
            correlation_id=str(body.get("correlation_id") or "") or request_id,
            causation_id=body.get("event_id") if isinstance(body.get("event_id"), str) else None,
            request_id=request_id, code=errors.MALFORMED_EVENT,
            message=f"the cert.requested event is not valid: {reason}",
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
