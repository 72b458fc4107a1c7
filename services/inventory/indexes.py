"""Indexes that answer ``-contains`` and ``-endswith`` without reading every row.

PostgreSQL: ``pg_trgm`` GIN indexes on ``lower(column)``; the planner uses them for ``LIKE``.

SQLite: a plain index cannot help a ``LIKE '%x%'``, so certbus keeps an FTS5 table with the
trigram tokenizer (SQLite 3.34+) over the same columns, maintained by triggers, so every writer
(this service, an import script, a manual fix in the sqlite3 shell) keeps it true:

* ``inventory_search_row`` gives each certificate a stable integer (the certificate table's key
  is text, and SQLite's implicit rowid may change on ``VACUUM``);
* ``inventory_search`` is *contentless* (``content=''``): it stores only the trigram index, not a
  second copy of the text; the triggers remove old entries with FTS5's ``'delete'`` command,
  which is given the old values;
* a search becomes ``cert_id IN (SELECT … WHERE inventory_search MATCH 'cn : "alice"')`` and
  keeps its ``LIKE`` on the certificate row, so the index narrows and the ``LIKE`` decides: the
  answer is the same as a full scan's (see :mod:`services.inventory.query`).

Values shorter than three characters have no trigram, and a substring found in a large share
of the catalog is cheaper to scan for (see :func:`selective`); those searches scan.
"""

from __future__ import annotations

import logging

from sqlalchemy import column, table, text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import Database, is_sqlite

log = logging.getLogger("certbus.inventory")

TRIGRAM_COLUMNS = ("cn", "subject_dn", "owner")

SELECTIVE_SHARE = 8
"""A substring in more than 1/8 of the certificates is answered by a scan, not the index
(measured at 1M rows: through the index ~4 µs per candidate, a scan ~0.8 µs per row)."""
SELECTIVE_MIN = 1000

SEARCH_TABLE = "inventory_search"
ROW_TABLE = "inventory_search_row"

search_table = table(SEARCH_TABLE, column("rowid"))
row_table = table(ROW_TABLE, column("id"), column("cert_id"))

_COLUMNS = ", ".join(TRIGRAM_COLUMNS)
_NEW = ", ".join(f"new.{c}" for c in TRIGRAM_COLUMNS)
_OLD = ", ".join(f"old.{c}" for c in TRIGRAM_COLUMNS)
_ROW_OF_OLD = f"(SELECT id FROM {ROW_TABLE} WHERE cert_id = old.cert_id)"
_ROW_OF_NEW = f"(SELECT id FROM {ROW_TABLE} WHERE cert_id = new.cert_id)"

SQLITE_DDL = (
    f"CREATE TABLE {ROW_TABLE} (id INTEGER PRIMARY KEY, cert_id TEXT NOT NULL UNIQUE)",
    f"CREATE VIRTUAL TABLE {SEARCH_TABLE} USING fts5({_COLUMNS}, content='', tokenize='trigram')",
    f"""CREATE TRIGGER {SEARCH_TABLE}_insert AFTER INSERT ON inventory_certificate BEGIN
        INSERT INTO {ROW_TABLE} (cert_id) VALUES (new.cert_id);
        INSERT INTO {SEARCH_TABLE} (rowid, {_COLUMNS}) VALUES ({_ROW_OF_NEW}, {_NEW});
    END""",
    f"""CREATE TRIGGER {SEARCH_TABLE}_update
        AFTER UPDATE OF cert_id, {_COLUMNS} ON inventory_certificate BEGIN
        INSERT INTO {SEARCH_TABLE} ({SEARCH_TABLE}, rowid, {_COLUMNS})
            VALUES ('delete', {_ROW_OF_OLD}, {_OLD});
        UPDATE {ROW_TABLE} SET cert_id = new.cert_id WHERE cert_id = old.cert_id;
        INSERT INTO {SEARCH_TABLE} (rowid, {_COLUMNS}) VALUES ({_ROW_OF_NEW}, {_NEW});
    END""",
    f"""CREATE TRIGGER {SEARCH_TABLE}_delete AFTER DELETE ON inventory_certificate BEGIN
        INSERT INTO {SEARCH_TABLE} ({SEARCH_TABLE}, rowid, {_COLUMNS})
            VALUES ('delete', {_ROW_OF_OLD}, {_OLD});
        DELETE FROM {ROW_TABLE} WHERE cert_id = old.cert_id;
    END""",
    # The certificates already there when the index is first made.
    f"INSERT INTO {ROW_TABLE} (cert_id) SELECT cert_id FROM inventory_certificate",
    f"""INSERT INTO {SEARCH_TABLE} (rowid, {_COLUMNS})
        SELECT r.id, {", ".join(f"c.{c}" for c in TRIGRAM_COLUMNS)}
        FROM {ROW_TABLE} r JOIN inventory_certificate c ON c.cert_id = r.cert_id""",
    f"INSERT INTO {SEARCH_TABLE} ({SEARCH_TABLE}) VALUES ('optimize')",
)


LATER_INDEXES = (
    # Added after the first release: create_all makes indexes only with a new table.
    "CREATE INDEX IF NOT EXISTS ix_inventory_certificate_field_lower_name "
    "ON inventory_certificate_field (lower(field), lower(value))",
    "CREATE INDEX IF NOT EXISTS ix_inventory_provisioning_request_cert_id "
    "ON inventory_provisioning_request (cert_id)",
)


async def ensure_search_indexes(db: Database) -> bool:
    """Create the text indexes if missing; whether ``-contains`` can use one."""
    for statement in LATER_INDEXES:
        try:
            async with db.engine.begin() as conn:
                await conn.execute(text(statement))
        except Exception as exc:  # noqa: BLE001 - a replica starting at the same time made it
            log.info("index not created here (%s); another replica may have made it", exc)
    try:
        async with db.engine.begin() as conn:
            if is_sqlite(db.engine):
                return await _ensure_sqlite(conn)
            await _ensure_postgres(conn)
            return True
    except Exception as exc:  # noqa: BLE001 - contains queries still work, only slower
        log.warning("no text search index (%s); -contains queries will scan", exc)
        return False


async def _ensure_sqlite(conn: AsyncConnection) -> bool:
    # Inside the write transaction (BEGIN IMMEDIATE): two replicas starting together cannot
    # both build it, and a failure half-way leaves nothing behind.
    if await has_sqlite_index(conn):
        return True
    for statement in SQLITE_DDL:
        await conn.execute(text(statement))
    log.info("built the trigram index for -contains searches")
    return True


async def has_sqlite_index(conn: AsyncConnection) -> bool:
    found = await conn.execute(
        text("SELECT count(*) FROM sqlite_master WHERE name IN (:a, :b)"),
        {"a": SEARCH_TABLE, "b": f"{SEARCH_TABLE}_delete"},
    )
    return int(found.scalar_one()) == 2


async def selective(conn: AsyncConnection, expressions: set[str]) -> set[str]:
    """The ``MATCH`` expressions worth answering from the index.

    Through the index each candidate costs a lookup of its certificate row (a few µs); a scan
    costs well under 1 µs per row. A common substring (``example``, in most names) is cheaper
    scanned, so each expression is tried with a ``LIMIT``: one that reaches it scans.
    """
    if not expressions:
        return set()
    rows = int((await conn.execute(text(f"SELECT max(id) FROM {ROW_TABLE}"))).scalar() or 0)
    limit = max(SELECTIVE_MIN, rows // SELECTIVE_SHARE)
    probe = text(
        f"SELECT count(*) FROM (SELECT rowid FROM {SEARCH_TABLE} "
        f"WHERE {SEARCH_TABLE} MATCH :expression LIMIT :limit)"
    )
    chosen = set()
    for expression in expressions:
        found = await conn.execute(probe, {"expression": expression, "limit": limit})
        if int(found.scalar_one()) < limit:
            chosen.add(expression)
    return chosen


async def _ensure_postgres(conn: AsyncConnection) -> None:
    await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
    for name in TRIGRAM_COLUMNS:
        await conn.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS ix_inventory_certificate_{name}_trgm "
                f"ON inventory_certificate USING gin (lower({name}) public.gin_trgm_ops)"
            )
        )
