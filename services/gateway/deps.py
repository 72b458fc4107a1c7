"""What route modules need from the running gateway: the bus, as small callables."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from shared.bus import EventPublisher, rpc_call
from shared.events import Event


class Bus:
    """The gateway's view of the bus: publish an event, call a service."""

    def __init__(self, broker: Any, rpc_timeout: float) -> None:
        self._broker = broker
        self._publisher = EventPublisher(broker)
        self._timeout = rpc_timeout

    async def publish(self, event: Event) -> None:
        await self._publisher.publish(event)

    async def call(
        self,
        service: str,
        operation: str,
        payload: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the RPC's own deadline, passed to NATS
    ) -> Any:
        return await rpc_call(
            self._broker, service, operation, payload or {}, timeout or self._timeout
        )


def get_bus(request: Request) -> Bus:
    return request.app.state.bus
