"""A pooled, read-only view of the service's database for the public endpoint.

The shared ``Database`` opens SQLite write transactions with BEGIN IMMEDIATE, which would make
every OCSP or CRL read queue behind the writers; WAL lets readers run beside them instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Row, event
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.sql import Executable
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import Database, normalise_url


class ReadView:
    def __init__(self, url: str, fallback: Database) -> None:
        url = normalise_url(url)
        self._own = url.startswith("sqlite")
        self._path = url.split(":///", 1)[1] if self._own else None
        self._direct: sqlite3.Connection | None = None
        if self._own:
            self.engine = create_async_engine(
                url, connect_args={"timeout": 30}, pool_size=8, max_overflow=8
            )

            @event.listens_for(self.engine.sync_engine, "connect")
            def _connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.execute("PRAGMA query_only=1")
                cursor.close()

            self._sessions = async_sessionmaker(
                self.engine, class_=AsyncSession, expire_on_commit=False
            )
        self._fallback = fallback

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        if not self._own:
            async with self._fallback.session() as session:
                yield session
            return
        async with self._sessions() as session:
            yield session

    async def first(self, statement: Executable) -> Row[Any] | None:
        """One row of a Core statement, without the ORM: the OCSP hot path."""
        engine = self.engine if self._own else self._fallback.engine
        async with engine.connect() as connection:
            return (await connection.execute(statement)).first()

    def sqlite_row(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """On SQLite, one indexed read on a read-only connection of the event loop's own thread.

        A WAL reader never waits for writers, and one point lookup in the page cache takes
        microseconds, far less than handing the query to aiosqlite's thread and back.
        Returns None for "no row"; raises ``LookupError`` when the database is not SQLite.
        """
        if self._path is None:
            raise LookupError("not SQLite")
        if self._direct is None:
            self._direct = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=30)
        row = self._direct.execute(sql, params).fetchone()
        return tuple(row) if row is not None else None

    @property
    def is_sqlite(self) -> bool:
        return self._path is not None

    async def dispose(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        if self._own:
            await self.engine.dispose()
