"""SQLite's trigram index for ``-contains``: used by the planner, and always the scan's answer.

The index is kept by triggers, so these tests write the way any writer would (ORM inserts,
updates of the indexed columns, deletes, a VACUUM that renumbers rowids) and compare every
answer with the same search compiled without the index (a full scan).
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, text
from sqlmodel import select

from services.inventory import query
from services.inventory.api import InventoryApi
from services.inventory.indexes import ensure_search_indexes, selective
from services.inventory.tables import TABLES, Certificate
from shared.db import Database

pytestmark = pytest.mark.integration

WORDS = ["alice", "Alicia", "bob", "robert", "ünïcode", 'quo"te', "100%_off", "smith", "Smithers"]


def certificate(i: int, rnd: random.Random) -> Certificate:
    cn = f"{rnd.choice(WORDS)}.{rnd.choice(WORDS)}{i}"
    return Certificate(
        cert_id=f"c{i:05d}",
        serial=format(i, "x"),
        cn=cn if i % 7 else None,
        subject_dn=f"CN={cn},O={rnd.choice(WORDS)} Ltd",
        owner=rnd.choice([*WORDS, None]),
    )


async def answers(db: Database, text_: str, text_index: bool) -> list[str]:
    indexed = query.index_candidates(query.parse(text_)) if text_index else set()
    condition, _ = query.compile_search(text_, indexed=indexed)
    async with db.session() as s:
        rows = await s.exec(select(Certificate.cert_id).where(condition))
        return sorted(rows.all())


SEARCHES = [
    'CN -contains "alic"',
    'CN -contains "ICE.B"',
    'DN -contains "smith"',
    'DN -contains "o=bob ltd"',
    'Owner -contains "ert"',
    'Owner -endswith "ers"',
    'CN -endswith "ce3"',
    'CN -contains "ünï"',
    'CN -contains "o\\"t"',
    'CN -contains "0%_"',
    'CN -notcontains "alice"',
    'CN -contains "al"',  # too short for a trigram: scans
    'CN -contains "alice" AND Owner -contains "bob"',
]


async def assert_index_agrees(db: Database) -> None:
    for search in SEARCHES:
        assert await answers(db, search, True) == await answers(db, search, False), search


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}", schema="inventory")
    await database.create_all(tables=TABLES)
    return database


async def test_certificates_already_there_are_indexed_and_every_later_write_keeps_it_true(
    db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "inventory.db"
    rnd = random.Random(7)
    async with db.transaction() as s:
        for i in range(300):
            s.add(certificate(i, rnd))
    assert await ensure_search_indexes(db)
    assert await ensure_search_indexes(db)  # a second start (or replica) finds it built
    await assert_index_agrees(db)

    async with db.transaction() as s:
        for i in range(300, 500):
            s.add(certificate(i, rnd))
    async with db.transaction() as s:
        rows = (await s.exec(select(Certificate).where(Certificate.cert_id < "c00200"))).all()
        for row in rows:
            if rnd.random() < 0.5:
                row.cn = f"renamed-{rnd.choice(WORDS)}" if rnd.random() < 0.8 else None
            if rnd.random() < 0.5:
                row.owner = rnd.choice([*WORDS, None])
            if rnd.random() < 0.2:
                row.subject_dn = None
            if rnd.random() < 0.1:
                await s.delete(row)
    await assert_index_agrees(db)
    assert await answers(db, 'CN -contains "renamed-"', True)

    await db.dispose()
    # Another writer (the sqlite3 shell, say) deletes rows and vacuums: rowids are renumbered.
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM inventory_certificate WHERE cert_id LIKE 'c003%'")
    conn = sqlite3.connect(path)
    conn.execute("VACUUM")
    conn.execute("INSERT INTO inventory_search(inventory_search) VALUES ('integrity-check')")
    conn.close()
    await assert_index_agrees(db)
    await db.dispose()


async def test_the_planner_answers_contains_from_the_trigram_index(db: Database) -> None:
    await ensure_search_indexes(db)
    condition, _ = query.compile_search('CN -contains "alice"', indexed={'cn : "alice"'})
    statement = select(func.count()).select_from(Certificate).where(condition)
    compiled = statement.compile(db.engine.sync_engine, compile_kwargs={"literal_binds": True})
    async with db.engine.connect() as conn:
        plan = (await conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))).all()
    steps = " / ".join(str(row[-1]) for row in plan)
    assert "VIRTUAL TABLE INDEX" in steps and "inventory_search" in steps, steps
    assert "SCAN inventory_certificate" not in steps, steps
    await db.dispose()


async def test_the_api_finds_the_index_once_it_is_built(db: Database) -> None:
    api = InventoryApi(db)
    assert not await api.text_index()
    await ensure_search_indexes(db)
    assert await api.text_index()
    async with db.transaction() as s:
        s.add(Certificate(cert_id="x1", serial="1", cn="Zebra.Example"))
        s.add(Certificate(cert_id="x2", serial="2", cn="zebu"))
    result = await api.certs_list({"query": 'CN -contains "ZEBR"'})
    assert [item["id"] for item in result["items"]] == ["x1"]
    assert result["total"] == 1
    await db.dispose()


async def test_a_substring_in_much_of_the_catalog_is_scanned_for_and_a_rare_one_is_looked_up(
    db: Database,
) -> None:
    await ensure_search_indexes(db)
    async with db.transaction() as s:
        for i in range(3000):
            s.add(Certificate(cert_id=f"h{i:05d}", serial=str(i), cn=f"host{i}.example.com"))
        s.add(Certificate(cert_id="rare", serial="r", cn="vault.example.com"))
    common, rare = 'cn : "example"', 'cn : "vault"'
    async with db.engine.connect() as conn:
        assert await selective(conn, {common, rare}) == {rare}
    api = InventoryApi(db)
    both = await api.certs_list({"query": 'CN -contains "vault" AND CN -contains "example"'})
    assert [item["id"] for item in both["items"]] == ["rare"]
    many = await api.certs_list({"query": 'CN -endswith ".example.com"', "limit": 5})
    assert many["total"] == 3001 and len(many["items"]) == 5
    await db.dispose()
