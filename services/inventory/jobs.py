"""Jobs sent to agents, and what the agents answered."""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory import prefetch
from services.inventory.tables import Job
from services.inventory.timeutil import as_utc, iso
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


async def record_result(session: AsyncSession, ev: AgentJobCompleted | AgentJobFailed) -> Job:
    row = await session.get(Job, ev.job_id)
    if row is None:
        row = Job(job_id=ev.job_id, machine=ev.machine, kind=ev.kind.value)
        session.add(row)
    if row.status != "sent" and (as_utc(row.updated_at) or ev.occurred_at) > ev.occurred_at:
        return row
    if isinstance(ev, AgentJobCompleted):
        row.status, row.result, row.error, row.error_code = "completed", ev.result, None, None
    else:
        row.status, row.error, row.error_code = "failed", ev.error, ev.code
    row.updated_at = utcnow()
    return row


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
