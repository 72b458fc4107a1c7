"""Identities as inventory knows them: users, devices and their links."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from services.gateway.deps import Bus, get_bus

router = APIRouter(prefix="/v1", tags=["identities"])


@router.get("/users", summary="Users known from HR events")
async def list_users(
    status: str | None = Query(None, description="active or offboarded"),
    department: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    bus: Bus = Depends(get_bus),
) -> dict[str, Any]:
    payload = {"status": status, "department": department, "limit": limit, "offset": offset}
    return await bus.call("inventory", "users.list", payload)


@router.get("/users/{user}", summary="One user: devices, provisioning requests, certificates")
async def get_user(user: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("inventory", "users.get", {"user": user})


@router.get("/devices", summary="Devices known from HR and asset events")
async def list_devices(
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    bus: Bus = Depends(get_bus),
) -> dict[str, Any]:
    return await bus.call("inventory", "devices.list", {"limit": limit, "offset": offset})


@router.get("/devices/{name}", summary="One device: users, installed certificates, agent")
async def get_device(name: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("inventory", "devices.get", {"name": name})


@router.get("/drift", summary="Differences between stores and what inventory expects")
async def list_drift(
    machine: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    bus: Bus = Depends(get_bus),
) -> dict[str, Any]:
    payload = {"machine": machine, "limit": limit, "offset": offset}
    return await bus.call("inventory", "drift.list", payload)
