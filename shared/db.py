"""Database helpers: SQLite (one file per service, WAL) by default, PostgreSQL by URL.

On PostgreSQL each service keeps its tables in a schema of its own, so one database can host
every service without any service reading another's tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import Table, event, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession


def normalise_url(url: str) -> str:
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def table_of(model: type[SQLModel]) -> Table:
    """The Core ``Table`` a table model maps to: its ``__table__``, which sqlmodel's types lack."""
    table = sa_inspect(model).local_table
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, schema: str | None = None) -> AsyncEngine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        # Pooled: opening an aiosqlite connection starts a thread and runs the pragmas, far too
        # dear to do for every transaction on the hot path.
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, pool_size=5, max_overflow=5, pool_pre_ping=False
        )
        _sqlite_pragmas(engine)
        return engine
    connect_args = {}
    if schema:
        connect_args["server_settings"] = {"search_path": schema}
    return create_async_engine(url, pool_size=10, max_overflow=10, connect_args=connect_args)


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    # pysqlite's own BEGIN is deferred; several writers need BEGIN IMMEDIATE to avoid
    # SQLITE_BUSY upgrades in the middle of a transaction.
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_reader(url: str) -> AsyncEngine:
    """Pooled, query-only connections in autocommit mode: readers of a WAL database neither
    wait for the write lock nor open the file again for every call."""
    engine = create_async_engine(url, connect_args={"timeout": 30}, pool_size=4, max_overflow=4)

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    return engine


class Database:
    """An engine plus a session factory; ``transaction()`` commits or rolls back as one."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.schema = schema
        self.engine = make_engine(url, schema)
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )
        self._url = normalise_url(url)
        self._reader: AsyncEngine | None = None
        self._readers: async_sessionmaker[AsyncSession] | None = None

    async def create_all(self, metadata=SQLModel.metadata, tables=None) -> None:  # type: ignore[no-untyped-def]
        async with self.engine.begin() as conn:
            if self.schema and not is_sqlite(self.engine):
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            await conn.run_sync(lambda sync: metadata.create_all(sync, tables=tables))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            yield session

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session that only reads (it cannot write on SQLite); cheap to open, runs alongside
        writers. Each statement sees what was committed when it ran."""
        if not is_sqlite(self.engine):
            async with self._sessions() as session:
                yield session
            return
        if self._readers is None:
            self._reader = _sqlite_reader(self._url)
            self._readers = async_sessionmaker(
                self._reader, class_=AsyncSession, expire_on_commit=False
            )
        async with self._readers() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._reader is not None:
            await self._reader.dispose()
            self._reader, self._readers = None, None
