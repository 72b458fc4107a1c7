"""The HR webhook: HR and identity systems POST the same events they could publish on NATS."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from pydantic import ValidationError

from services.gateway.deps import Bus, get_bus
from services.gateway.errors import ApiError
from shared.events import HR_EVENTS

router = APIRouter(prefix="/v1/hr", tags=["hr"])

EXAMPLE = {
    "type": "user.onboarded",
    "user": "alice",
    "email": "alice@example.com",
    "department": "engineering",
    "devices": ["alice-laptop"],
}


@router.post(
    "/events",
    status_code=202,
    summary="Accept an HR event (user.onboarded, user.offboarded, device.*)",
    description="The body is the event's fields plus `type`, its subject. The event is stored on "
    "the bus before the answer is sent; a repeated `event_id` is accepted once.",
)
async def post_event(
    request: Request,
    payload: dict[str, Any] = Body(..., examples=[EXAMPLE]),
    bus: Bus = Depends(get_bus),
) -> dict[str, Any]:
    kind = payload.pop("type", None) or payload.pop("subject", None)
    model = HR_EVENTS.get(str(kind))
    if model is None:
        raise ApiError(
            422,
            "unknown_event_type",
            f"type must be one of {sorted(HR_EVENTS)}, not {kind!r}",
        )
    payload.setdefault("actor", request.headers.get("x-certbus-actor", "hr-webhook"))
    try:
        event = model.model_validate(payload)
    except ValidationError as exc:
        details = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        first = details[0]
        raise ApiError(
            422, "validation_error", f"{'.'.join(map(str, first['loc']))}: {first['msg']}", details
        ) from exc
    await bus.publish(event)
    return {
        "accepted": True,
        "event_id": event.event_id,
        "type": event.subject,
        "correlation_id": event.correlation_id,
    }


@router.get(
    "/offboardings/{user}",
    summary="An offboarding's progress",
    description="Certificates found, revoked and removed from stores, what is still pending "
    "(not revoked, still installed, requests waiting for issuance), with timestamps.",
)
async def get_offboarding(user: str, bus: Bus = Depends(get_bus)) -> dict[str, Any]:
    return await bus.call("inventory", "offboarding.get", {"user": user})
