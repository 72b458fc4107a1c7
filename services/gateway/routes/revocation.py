"""Revoking certificates (one, or many by ids or a query) and lifting holds, via revocation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, model_validator

from services.gateway.deps import Bus, get_bus

router = APIRouter(prefix="/v1/certificates", tags=["revocation"])

BULK_TIMEOUT = 120.0
PAGE = 10_000
REASON_HELP = (
    "RFC 5280 reason, by number (0-10) or name: unspecified, keyCompromise, cACompromise, "
    "affiliationChanged, superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, "
    "aACompromise"
)


class Revoke(BaseModel):
    reason: str | int = Field("unspecified", description=REASON_HELP, examples=["keyCompromise"])
    comment: str = Field(min_length=1, examples=["laptop stolen"])
    effective_at: datetime | None = Field(None, description="Revocation time (default: now)")
    invalidity_date: datetime | None = Field(None, description="When the key became unsafe")


class BulkRevoke(Revoke):
    cert_ids: list[str] | None = Field(None, description="Ids, serials or thumbprints")
    query: str | None = Field(
        None, description="Inventory search language, as GET /v1/certificates"
    )
    dry_run: bool = False

    @model_validator(mode="after")
    def _one_selection(self) -> BulkRevoke:
        if bool(self.cert_ids) == bool(self.query):
            raise ValueError("give either cert_ids or query")
        return self


class Release(BaseModel):
    comment: str = "hold released"


def _actor(request: Request) -> str:
    return str(
        getattr(request.state, "actor", None) or request.headers.get("x-certbus-actor") or "api"
    )


def _payload(body: BaseModel, request: Request, **extra: Any) -> dict[str, Any]:
    data = body.model_dump(mode="json", exclude_none=True)
    return {**data, **extra, "actor": _actor(request)}


async def _matching(bus: Bus, query: str) -> list[str]:
    """Every certificate id the inventory's search returns, page by page."""
    ids: list[str] = []
    while True:
        page = await bus.call(
            "inventory", "certs.list", {"query": query, "limit": PAGE, "offset": len(ids)}
        )
        items = page.get("items", [])
        ids.extend(item["id"] for item in items)
        if not items or len(ids) >= int(page.get("total", 0)):
            return ids


@router.post("/revoke", summary="Revoke many certificates, by ids or by a search query")
async def revoke_many(
    body: BulkRevoke, request: Request, bus: Bus = Depends(get_bus)
) -> dict[str, Any]:
    ids = body.cert_ids or []
    if body.query:
        ids = await _matching(bus, body.query)
        if not ids:
            return {"dry_run": body.dry_run, "query": body.query, "items": [], "counts": {}}
    payload = _payload(body, request, cert_ids=ids)
    payload.pop("query", None)
    result = await bus.call("revocation", "revoke.bulk", payload, timeout=BULK_TIMEOUT)
    return {**result, "query": body.query} if body.query else result


@router.post("/{cert_id}/revoke", summary="Revoke one certificate (by id, serial or thumbprint)")
async def revoke_one(
    cert_id: str, body: Revoke, request: Request, bus: Bus = Depends(get_bus)
) -> dict[str, Any]:
    return await bus.call("revocation", "revoke", _payload(body, request, id=cert_id))


@router.post("/{cert_id}/release", summary="Lift a certificateHold")
async def release(
    cert_id: str, request: Request, body: Release | None = None, bus: Bus = Depends(get_bus)
) -> dict[str, Any]:
    return await bus.call("revocation", "release", _payload(body or Release(), request, id=cert_id))


@router.get("/{cert_id}/revocation", summary="Whether a certificate is revoked, and how")
async def revocation_status(cert_id: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("revocation", "status", {"id": cert_id})
