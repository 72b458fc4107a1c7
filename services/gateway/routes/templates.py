"""Certificate templates and their rules, answered by the issuer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from services.gateway.deps import Bus, get_bus
from services.gateway.errors import ApiError

router = APIRouter(prefix="/v1/templates", tags=["templates"])


@router.get("", summary="List the templates with their rules")
async def list_templates(bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("issuer", "templates.list")


@router.get("/{name}", summary="One template")
async def get_template(name: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    for template in (await bus.call("issuer", "templates.list"))["items"]:
        if template["name"] == name:
            return template
    raise ApiError(404, "not_found", f"no template named {name!r}")
