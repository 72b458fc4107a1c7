"""What every service process has: a broker, a publisher, its database and outbox relay,
a liveness ping, and an AsyncAPI-documented FastStream application around them."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import outbox
from shared.bus import (
    BatchHandler,
    EventPublisher,
    InvalidHandler,
    RpcHandler,
    durable_consumer,
    ensure_streams,
    make_broker,
    rpc_endpoint,
)
from shared.db import Database, table_of
from shared.events import Event
from shared.settings import CommonSettings
from shared.subjects import RPC_PING

Hook = Callable[[], Awaitable[None]]


class ServiceRuntime:
    """Built by a service's composition root; connects to nothing until started."""

    def __init__(
        self,
        service: str,
        settings: CommonSettings,
        db: Database | None = None,
        broker: NatsBroker | None = None,
        tables: Iterable[Any] | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.log = logging.getLogger(f"certbus.{service}")
        self.broker = broker or make_broker(settings.nats_url, service)
        self.publisher = EventPublisher(self.broker)
        self.db = db
        self._tables = (
            [*tables, table_of(outbox.OutboxMessage), table_of(outbox.ParkedOutboxMessage)]
            if tables is not None
            else None
        )
        self.relay = outbox.OutboxRelay(db, self.publisher.publish_raw) if db else None
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.started_at = time.time()
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self.app = FastStream(
            self.broker,
            specification=AsyncAPI(title=f"certbus {service}", version="0.1.0"),
            on_startup=[self._on_startup],
            after_startup=[self._after_startup],
            on_shutdown=[self._on_shutdown],
        )
        rpc_endpoint(self.broker, service, RPC_PING, self._ping)

    async def _ping(self, _request: dict[str, Any]) -> dict[str, Any]:
        return {
            "service": self.service,
            "instance": self.instance,
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }

    def on_startup(self, hook: Hook) -> None:
        self._startup.append(hook)

    def on_shutdown(self, hook: Hook) -> None:
        self._shutdown.append(hook)

    def consume(
        self,
        subject: str,
        handler: BatchHandler[Any],
        *,
        on_invalid: InvalidHandler | None = None,
        batch_size: int = 100,
        model: type[Event] | None = None,
        ack_wait: float = 30.0,
        max_wait: float | None = None,
    ) -> None:
        durable_consumer(
            self.broker,
            service=self.service,
            subject=subject,
            handler=handler,
            publisher=lambda: self.publisher,
            on_invalid=on_invalid,
            batch_size=batch_size,
            max_deliver=self.settings.max_deliver,
            ack_wait=ack_wait,
            model=model,
            max_wait=max_wait if max_wait is not None else self.settings.consumer_max_wait,
        )

    def rpc(self, operation: str, fn: RpcHandler, max_workers: int = 1) -> None:
        rpc_endpoint(self.broker, self.service, operation, fn, max_workers=max_workers)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """A transaction whose staged events are published once it commits."""
        assert self.db is not None, f"{self.service} has no database"
        async with self.db.transaction() as session:
            uow = UnitOfWork(session)
            yield uow
        if self.relay and uow.staged:
            self.relay.notify()

    async def start_dependencies(self) -> None:
        """Streams and tables; also used by tests that drive a service without its app."""
        await ensure_streams(self.settings.nats_url, self.settings.stream_replicas)
        if self.db:
            await self.db.create_all(tables=self._tables)

    async def _on_startup(self) -> None:
        await self.start_dependencies()

    async def _after_startup(self) -> None:
        if self.relay:
            self.relay.start()
        for hook in self._startup:
            await hook()
        self.log.info("%s started (%s) on %s", self.service, self.instance, self.settings.nats_url)

    async def _on_shutdown(self) -> None:
        for hook in reversed(self._shutdown):
            await hook()
        if self.relay:
            await self.relay.stop()
        if self.db:
            await self.db.dispose()


class UnitOfWork:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.staged = 0

    def emit(self, *events: Event) -> None:
        outbox.stage(self.session, events)
        self.staged += len(events)
