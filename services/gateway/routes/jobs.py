"""Jobs sent to agents, with their status, results and errors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from services.gateway.deps import Bus, get_bus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("", summary="Jobs, newest first")
async def list_jobs(
    machine: str | None = None,
    status: str | None = Query(None, description="sent, completed or failed"),
    kind: str | None = Query(
        None, description="inventory, add, remove, create, reenroll, discover"
    ),
    cert_id: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    bus: Bus = Depends(get_bus),
) -> dict[str, Any]:
    payload = {
        "machine": machine,
        "status": status,
        "kind": kind,
        "cert_id": cert_id,
        "limit": limit,
        "offset": offset,
    }
    return await bus.call("inventory", "jobs.list", payload)


@router.get("/{job_id}", summary="One job: what was asked, what the agent answered")
async def get_job(job_id: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("inventory", "jobs.get", {"id": job_id})
