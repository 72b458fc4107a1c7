"""What follows from issuance, rejection and revocation: install, fail, remove."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory import catalog, jobs, prefetch
from services.inventory.tables import Certificate, Job, ProvisioningRequest, User
from shared.clock import utcnow
from shared.events import (
    AgentJob,
    CertIssued,
    CertRejected,
    CertRevocationRequested,
    Event,
    JobKind,
    StoreTarget,
    derived_id,
)
from shared.pki import RevocationReason


async def prefetch_issued(session: AsyncSession, events: list[CertIssued]) -> None:
    """Load a batch's certificates, requests, owners and install jobs in four queries."""
    await prefetch.load(session, Certificate, Certificate.cert_id, {e.cert_id for e in events})
    await prefetch.load(session, ProvisioningRequest, ProvisioningRequest.request_id,
                        {e.request_id for e in events})  # fmt: skip
    await prefetch.load(session, User, User.user, {e.owner for e in events if e.owner})
    await prefetch.load(session, Job, Job.job_id,
                        {derived_id("job", e.cert_id, "add") for e in events})  # fmt: skip


async def issued(session: AsyncSession, ev: CertIssued, install: bool = True) -> list[Event]:
    """Record the certificate and, when it was asked for a store (and ``install``), send the
    install job."""
    cert, new = await catalog.record_issued(session, ev)
    request = await prefetch.lookup(session, ProvisioningRequest, ev.request_id)
    if request is not None and request.status == "retired":
        return _issued_for_a_retired_slot(request, ev, cert, new)
    if request is not None and request.status in ("waiting", "failed"):
        request.status, request.cert_id, request.error = "issued", ev.cert_id, None
        request.updated_at = utcnow()
    target = ev.target or (StoreTarget(**request.target) if request and request.target else None)
    if not install or not new or target is None or cert.status == "revoked":
        return []
    if ev.owner and await _offboarded(session, ev.owner):
        return []
    job = await install_job(session, ev, cert, target)
    return [job] if job else []


def _issued_for_a_retired_slot(
    request: ProvisioningRequest, ev: CertIssued, cert: Certificate, new: bool
) -> list[Event]:
    """Issued for a slot that closed meanwhile (its device left the user while the agent was
    away): not installed, and revoked as the slot's certificate would have been."""
    if request.cert_id is None:
        request.cert_id = ev.cert_id
    if not new or cert.status == "revoked":
        return []
    return [
        ev.caused(
            CertRevocationRequested,
            event_id=derived_id("retired-on-issue", ev.cert_id),
            cert_ids=[ev.cert_id],
            reason=RevocationReason.AFFILIATION_CHANGED,
            comment=f"issued after {request.template} on {request.device} was retired "
            f"for {request.user}",
        )
    ]


async def install_job(
    session: AsyncSession, cause: Event, cert: Certificate, target: StoreTarget
) -> AgentJob | None:
    return await jobs.send(
        session,
        cause,
        job_id=derived_id("job", cert.cert_id, "add"),
        machine=target.machine,
        kind=JobKind.ADD,
        target=target,
        request_id=cert.request_id,
        template=cert.template,
        owner=cert.owner,
        cert_id=cert.cert_id,
        serial=cert.serial,
        certificate_pem=cert.certificate_pem,
        chain_pem=list(cert.chain_pem),
    )


async def rejected(session: AsyncSession, ev: CertRejected) -> None:
    request = await session.get(ProvisioningRequest, ev.request_id)
    if request is not None and request.status == "waiting":
        request.status, request.error = "failed", f"{ev.code}: {ev.message}"
        request.updated_at = utcnow()


async def remove_job(
    session: AsyncSession,
    cause: Event,
    cert: Certificate,
    target: StoreTarget,
    job_id: str | None = None,
) -> AgentJob | None:
    """The job that deletes the certificate from one place. Its id defaults to one derived from
    the certificate and the place (a revocation removes once); a caller that must remove it
    from there again (drift found it back) names a job of its own."""
    return await jobs.send(
        session,
        cause,
        job_id=job_id
        or derived_id(
            "job", cert.cert_id, target.machine, target.store_path, target.alias, "remove"
        ),
        machine=target.machine,
        kind=JobKind.REMOVE,
        target=target,
        cert_id=cert.cert_id,
        serial=cert.serial,
        owner=cert.owner,
    )


async def remove_everywhere(
    session: AsyncSession, cause: Event, cert: Certificate
) -> list[AgentJob]:
    out = []
    for loc in await catalog.active_locations(session, cert.cert_id):
        target = StoreTarget(
            machine=loc.machine, store_type=loc.store_type, store_path=loc.store_path,  # type: ignore[arg-type]
            alias=loc.alias,
        )  # fmt: skip
        job = await remove_job(session, cause, cert, target)
        if job:
            out.append(job)
    return out


async def _offboarded(session: AsyncSession, user: str) -> bool:
    row = await prefetch.lookup(session, User, user)
    return row is not None and row.status == "offboarded"
