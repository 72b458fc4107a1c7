"""Liveness of every service, asked over the bus."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from services.gateway.deps import Bus, get_bus
from shared.bus import RpcError
from shared.subjects import RPC_PING, SERVICES

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health", summary="Liveness of the gateway and of every service behind it")
async def health(bus: Bus = Depends(get_bus)) -> JSONResponse:
    async def ping(service: str) -> tuple[str, dict[str, Any]]:
        try:
            info = await bus.call(service, RPC_PING, timeout=1.5)
            return service, {"ok": True, **info}
        except RpcError as exc:
            return service, {"ok": False, "error": exc.message}

    results = dict(await asyncio.gather(*(ping(s) for s in SERVICES)))
    healthy = all(r["ok"] for r in results.values())
    body = {"status": "ok" if healthy else "degraded", "gateway": {"ok": True}, "services": results}
    return JSONResponse(body, status_code=200 if healthy else 503)
