"""Renewing installed certificates where they live (campaigns by query, with a dry run)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, model_validator

from services.gateway.deps import Bus, get_bus

router = APIRouter(prefix="/v1/renewals", tags=["renewals"])


class StartRenewal(BaseModel):
    query: str | None = Field(
        None,
        description="Inventory search language, as GET /v1/certificates",
        examples=['SignatureAlgorithm -eq "sha1WithRSAEncryption"'],
    )
    cert_ids: list[str] | None = Field(None, description="Certificate ids")
    dry_run: bool = Field(False, description="Only show the plan")
    reason: str | None = Field(None, description="Why (kept with each renewal)")

    @model_validator(mode="after")
    def _one_selection(self) -> StartRenewal:
        if bool(self.cert_ids) == bool(self.query):
            raise ValueError("give either cert_ids or query")
        return self


@router.post(
    "",
    status_code=202,
    summary="Renew what a query selects, in every store each certificate is installed in",
    description=(
        "Each place gets a re-enrollment job: the key is made on the machine, the new "
        "certificate replaces the old one under the same alias, and once it is in every place "
        "the old one is revoked as superseded. Asking again resumes and never repeats."
    ),
)
async def start(
    body: StartRenewal, request: Request, response: Response, bus: Bus = Depends(get_bus)
) -> dict[str, Any]:
    payload = {**body.model_dump(exclude_none=True), "actor": _actor(request)}
    result = await bus.call("inventory", "renewals.start", payload, timeout=120.0)
    if body.dry_run:
        response.status_code = 200
    return result


@router.get("", summary="Renewals and their progress")
async def list_renewals(
    status: str | None = Query(None, description="planned, issued, installed or failed"),
    cert_id: str | None = Query(None, description="The certificate being renewed"),
    machine: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    bus: Bus = Depends(get_bus),
) -> dict[str, Any]:
    payload = {"status": status, "cert_id": cert_id, "machine": machine, "limit": limit,
               "offset": offset}  # fmt: skip
    return await bus.call("inventory", "renewals.list", payload)


def _actor(request: Request) -> str:
    return str(
        getattr(request.state, "actor", None) or request.headers.get("x-certbus-actor") or "api"
    )
