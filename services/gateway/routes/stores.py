"""Certificate stores on machines: PEM directories, PKCS#12 files, Java KeyStores."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from services.gateway.deps import Bus, get_bus

router = APIRouter(prefix="/v1/stores", tags=["stores"])


class NewStore(BaseModel):
    machine: str
    store_type: Literal["pem", "pkcs12", "jks"] = "pem"
    store_path: str


class Enrollment(BaseModel):
    template: str
    subject: str
    sans: list[str] = []
    alias: str | None = None
    owner: str | None = None
    key_type: str = "ec-p256"
    request_id: str | None = None


@router.get("", summary="Stores, optionally one machine's")
async def list_stores(
    machine: str | None = None, status: str | None = None, bus: Bus = Depends(get_bus)
) -> dict[str, Any]:
    return await bus.call("inventory", "stores.list", {"machine": machine, "status": status})


@router.post("", status_code=202, summary="Add a store; the machine's agent creates it")
async def add_store(
    body: NewStore, request: Request, bus: Bus = Depends(get_bus)
) -> dict[str, Any]:
    payload = {**body.model_dump(), "actor": request.headers.get("x-certbus-actor", "api")}
    return await bus.call("inventory", "stores.add", payload)


@router.post("/{store_id}/inventory", status_code=202, summary="Have the agent report the store")
async def inventory_store(store_id: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("inventory", "stores.inventory", {"id": store_id})


@router.post("/{store_id}/approve", summary="Approve a store found by discovery")
async def approve_store(store_id: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("inventory", "stores.approve", {"id": store_id})


@router.post(
    "/{store_id}/enroll",
    status_code=202,
    summary="Issue a certificate into the store, its key made on the machine",
    description="The agent makes the key, sends a CSR; once issued, the certificate is "
    "installed under `alias`. The same request (store, alias, template, subject, or the given "
    "`request_id`) issues once however often it is sent.",
)
async def enroll_into_store(
    store_id: str, body: Enrollment, request: Request, bus: Bus = Depends(get_bus)
) -> dict[str, Any]:
    payload = {
        "id": store_id,
        **body.model_dump(),
        "actor": request.headers.get("x-certbus-actor", "api"),
    }
    return await bus.call("inventory", "stores.enroll", payload)
