"""Certificate authorities and their chains, answered by the issuer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response

from services.gateway.deps import Bus, get_bus
from services.gateway.errors import ApiError

router = APIRouter(prefix="/v1/cas", tags=["cas"])


async def _find(bus: Bus, name: str) -> dict[str, Any]:
    for ca in (await bus.call("issuer", "cas.list"))["items"]:
        if ca["name"] == name:
            return ca
    raise ApiError(404, "not_found", f"no CA named {name!r}")


@router.get("", summary="List the CAs with their chains")
async def list_cas(bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("issuer", "cas.list")


@router.get("/{name}", summary="One CA")
async def get_ca(name: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await _find(bus, name)


@router.get(
    "/{name}/chain",
    summary="The CA's chain as PEM (the CA first, the root last)",
    response_class=PlainTextResponse,
    responses={200: {"content": {"application/pem-certificate-chain": {}}}},
)
async def get_chain(name: str, bus: Bus = Depends(get_bus)) -> Response:
    ca = await _find(bus, name)
    return Response(
        "".join(ca["chain_pem"]),
        media_type="application/pem-certificate-chain",
        headers={"Content-Disposition": f'attachment; filename="{name}-chain.pem"'},
    )
