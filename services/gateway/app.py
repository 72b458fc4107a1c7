"""The gateway's composition root: a FastAPI app whose lifespan connects the bus.

Route modules live in ``routes/``; each exposes ``router`` and is listed in ``ROUTE_MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.gateway import errors
from services.gateway.deps import Bus
from services.gateway.settings import GatewaySettings
from shared import logs
from shared.bus import ensure_streams, make_broker

ROUTE_MODULES = [
    "services.gateway.routes.health",
    "services.gateway.routes.hr",
    "services.gateway.routes.certificates",
    "services.gateway.routes.inventory",
    "services.gateway.routes.agents",
    "services.gateway.routes.stores",
    "services.gateway.routes.jobs",
    "services.gateway.routes.renewals",
    "services.gateway.routes.revocation",
    "services.gateway.routes.cas",
    "services.gateway.routes.templates",
    "services.gateway.routes.enrollment",
    "services.gateway.routes.metadata",
    "services.gateway.routes.notifications",
]


def build(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_streams(settings.nats_url, settings.stream_replicas)
        broker = make_broker(settings.nats_url, "gateway")
        await broker.start()
        app.state.bus = Bus(broker, settings.rpc_timeout)
        try:
            yield
        finally:
            await broker.stop()

    app = FastAPI(
        title="certbus",
        version="0.1.0",
        description="Event-driven certificate lifecycle: the Web API.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    errors.install(app)
    for name in ROUTE_MODULES:
        app.include_router(importlib.import_module(name).router)
    return app


def main() -> None:
    import uvicorn

    settings = GatewaySettings()
    logs.configure("gateway", settings.log_level)
    uvicorn.run(
        build(settings), host=settings.gateway_host, port=settings.gateway_port, log_level="warning"
    )
