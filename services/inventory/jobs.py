"""Jobs sent to agents, and what the agents answered."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory import prefetch
from services.inventory.tables import Job, JobPart
from services.inventory.timeutil import as_utc, iso
from shared import job_results
from shared.clock import utcnow
from shared.events import AgentJob, AgentJobCompleted, AgentJobFailed, Event, JobKind, StoreTarget


async def send(
    session: AsyncSession, cause: Event, known_new: bool = False, **fields: Any
) -> AgentJob | None:
    """Record a job and return it for the outbox; ``None`` when that job was already sent."""
    job = cause.caused(AgentJob, event_id=fields["job_id"], **fields)
    if not known_new and await prefetch.lookup(session, Job, job.job_id) is not None:
        return None
    prefetch.added(
        session,
        Job(
            job_id=job.job_id,
            machine=job.machine,
            kind=job.kind.value,
            request_id=job.request_id,
            cert_id=job.cert_id,
            target=job.target.model_dump() if job.target else None,
        ),
        job.job_id,
    )
    return job


async def record_result(
    session: AsyncSession, ev: AgentJobCompleted | AgentJobFailed
) -> AgentJobCompleted | None:
    """Record what an agent answered about a job. Returns the whole report the one time the job
    becomes completed (a result in parts: when the last of its parts is in, in whatever order
    they came), so what follows from it happens once; ``None`` otherwise."""
    row = await session.get(Job, ev.job_id, with_for_update=True)
    if row is None:
        row = Job(job_id=ev.job_id, machine=ev.machine, kind=ev.kind.value)
        session.add(row)
    answered_at = as_utc(row.updated_at) or ev.occurred_at
    superseded = row.status != "sent" and answered_at > ev.occurred_at
    if isinstance(ev, AgentJobFailed):
        if not superseded:
            row.status, row.error, row.error_code = "failed", ev.error, ev.code
            row.updated_at = utcnow()
        return None
    if row.status == "completed" or superseded:
        return None
    whole = ev if ev.parts == 1 else await _assembled(session, ev)
    if whole is not None:
        row.status, row.result, row.error, row.error_code = "completed", whole.result, None, None
        row.updated_at = utcnow()
    return whole


async def _assembled(session: AsyncSession, ev: AgentJobCompleted) -> AgentJobCompleted | None:
    """Keep this part; once every part of its result is kept, the report they make together."""
    digest = ev.result_sha256 or ""
    if await session.get(JobPart, (ev.job_id, digest, ev.parts, ev.part)) is None:
        session.add(
            JobPart(
                job_id=ev.job_id, result_sha256=digest, parts=ev.parts, part=ev.part,
                result=ev.result,
            )
        )  # fmt: skip
    kept = (
        await session.exec(
            select(JobPart)
            .where(JobPart.job_id == ev.job_id, JobPart.result_sha256 == digest,
                   JobPart.parts == ev.parts)
            .order_by(JobPart.part)  # type: ignore[arg-type]
        )
    ).all()  # fmt: skip
    if len(kept) < ev.parts:
        return None
    whole = ev.model_copy(update={"result": job_results.merge([p.result for p in kept])})
    await session.exec(delete(JobPart).where(col(JobPart.job_id) == ev.job_id))  # type: ignore[call-overload]
    return whole


# The API shows at most this many items of each list in a result, so that a job's answer fits in
# one message however large the store; the catalog holds every certificate a report named.
RESULT_ITEMS_SHOWN = 100


def shown_result(result: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, int]]:
    """The result as the API shows it, and the full length of each list it shortened."""
    if not result:
        return result, {}
    cut = {
        k: len(v) for k, v in result.items() if isinstance(v, list) and len(v) > RESULT_ITEMS_SHOWN
    }
    return {k: v[:RESULT_ITEMS_SHOWN] if k in cut else v for k, v in result.items()}, cut


def to_json(row: Job) -> dict[str, Any]:
    result, cut = shown_result(row.result)
    return {
        "job_id": row.job_id,
        "machine": row.machine,
        "kind": row.kind,
        "status": row.status,
        "request_id": row.request_id,
        "cert_id": row.cert_id,
        "target": row.target,
        "result": result,
        "result_truncated": cut or None,
        "error": row.error,
        "error_code": row.error_code,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


__all__ = ["send", "record_result", "to_json", "JobKind", "StoreTarget"]
