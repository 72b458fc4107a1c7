"""``Database.reading()``: read-only sessions that do not queue behind SQLite's write lock."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from shared.db import Database


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    async with database.transaction() as s:
        await s.exec(text("CREATE TABLE probe_reading (n INTEGER)"))  # type: ignore[call-overload]
        await s.exec(text("INSERT INTO probe_reading VALUES (1)"))  # type: ignore[call-overload]
    yield database
    await database.dispose()


async def _count(db: Database) -> int:
    async with db.reading() as s:
        return (await s.exec(text("SELECT count(*) FROM probe_reading"))).one()[0]  # type: ignore[call-overload]


async def test_a_reader_sees_what_was_committed_while_a_writer_holds_the_lock(db) -> None:
    holding, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with db.transaction() as s:
            await s.exec(text("INSERT INTO probe_reading VALUES (2)"))  # type: ignore[call-overload]
            holding.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await holding.wait()
    during = await asyncio.wait_for(_count(db), 10)
    release.set()
    await task
    assert (during, await _count(db)) == (1, 2)


async def test_a_reader_cannot_write(db) -> None:
    with pytest.raises(OperationalError, match="readonly"):
        async with db.reading() as s:
            await s.exec(text("INSERT INTO probe_reading VALUES (3)"))  # type: ignore[call-overload]
