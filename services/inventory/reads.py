"""A pooled, read-only view of inventory's database for searches.

The service's own ``Database`` opens a connection per session and begins every transaction
with ``BEGIN IMMEDIATE`` (right for its writers). Searches need neither: on SQLite they get a
pool of read-only connections that never take the write lock, so a search neither waits for
nor blocks the consumers. On PostgreSQL the service's pool serves both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import Database, is_sqlite, normalise_url


class ReadView:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


Reads = Database | ReadView


def read_view(db: Database, url: str) -> Reads:
    if not is_sqlite(db.engine):
        return db
    engine = create_async_engine(
        normalise_url(url), pool_size=4, max_overflow=4, connect_args={"timeout": 30}
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    return ReadView(engine)
