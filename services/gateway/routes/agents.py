"""Agents: registration, approval, liveness and discovery."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request

from services.gateway.deps import Bus, get_bus

router = APIRouter(prefix="/v1/agents", tags=["agents"])


def _actor(request: Request) -> str:
    return request.headers.get("x-certbus-actor", "api")


@router.get("", summary="Agents with their approval and whether they are online")
async def list_agents(
    status: str | None = Query(None, description="pending, approved or rejected"),
    state: str | None = Query(None, description="online or offline"),
    bus: Bus = Depends(get_bus),
) -> dict[str, Any]:
    return await bus.call("inventory", "agents.list", {"status": status, "state": state})


@router.post("/{machine}/approve", summary="Approve an agent waiting for approval")
async def approve_agent(
    machine: str, request: Request, bus: Bus = Depends(get_bus)
) -> dict[str, Any]:
    return await bus.call(
        "inventory", "agents.approve", {"machine": machine, "actor": _actor(request)}
    )


@router.post("/{machine}/reject", summary="Reject an agent: its reports are ignored")
async def reject_agent(
    machine: str, request: Request, bus: Bus = Depends(get_bus)
) -> dict[str, Any]:
    payload = {"machine": machine, "reject": True, "actor": _actor(request)}
    return await bus.call("inventory", "agents.approve", payload)


@router.post("/{machine}/discover", status_code=202, summary="Scan directories for stores")
async def discover(
    machine: str,
    request: Request,
    body: dict[str, Any] = Body(default={}, examples=[{"paths": ["/etc/ssl", "certs"]}]),
    bus: Bus = Depends(get_bus),
) -> dict[str, Any]:
    payload = {
        "machine": machine,
        "paths": body.get("paths"),
        "max_depth": body.get("max_depth"),
        "actor": _actor(request),
    }
    return await bus.call("inventory", "agents.discover", payload)
