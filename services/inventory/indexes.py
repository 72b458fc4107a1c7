"""Indexes only PostgreSQL has: trigram indexes answer ``-contains`` without a full scan."""

from __future__ import annotations

import logging

from sqlalchemy import text

from shared.db import Database, is_sqlite

log = logging.getLogger("certbus.inventory")

TRIGRAM_COLUMNS = ("cn", "subject_dn", "owner")


async def ensure_search_indexes(db: Database) -> None:
    if is_sqlite(db.engine):
        return
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
            for column in TRIGRAM_COLUMNS:
                await conn.execute(
                    text(
                        f"CREATE INDEX IF NOT EXISTS ix_inventory_certificate_{column}_trgm "
                        f"ON inventory_certificate USING gin (lower({column}) public.gin_trgm_ops)"
                    )
                )
    except Exception as exc:  # noqa: BLE001 - contains queries still work, only slower
        log.warning("no trigram indexes (%s); -contains queries will scan", exc)
