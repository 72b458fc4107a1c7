"""The notifier's delivery log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from services.gateway.deps import Bus, get_bus

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])


@router.get("/deliveries", summary="Deliveries, newest first")
async def list_deliveries(
    event_id: str | None = None,
    subject: str | None = Query(None, examples=["cert.revoked"]),
    status: str | None = Query(None, pattern="^(sending|sent|retrying|failed)$"),
    channel: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    bus: Bus = Depends(get_bus),
) -> dict[str, Any]:
    return await bus.call(
        "notifier",
        "deliveries.list",
        {
            "event_id": event_id,
            "subject": subject,
            "status": status,
            "channel": channel,
            "limit": limit,
            "offset": offset,
        },
    )


@router.get("/subscriptions", summary="Which events go to which channel")
async def list_subscriptions(bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("notifier", "subscriptions.list", {})
