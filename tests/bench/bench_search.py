"""Catalog search on 1,000,000 certificates: the search language against hand-written SQL.

Rows are bulk-loaded into inventory's real schema (every index it declares; trigram indexes
on PostgreSQL). Each query runs through ``InventoryApi.certs_list`` exactly as the RPC does:
parse, compile to parameterised SQL, fetch a page of 100 with its total, render JSON. The
baseline is the database's own time for the equivalent hand-written SQL (the same page and
count) on a raw driver connection; on SQLite, for substring searches, the hand-written query
that uses the same trigram index (and, for scale, the plain ``LIKE`` full scan it replaces).
SQLite always; PostgreSQL when one answers.

    CERTBUS_BENCH_SEARCH_ROWS=1000000 python -m tests.bench search
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlmodel import SQLModel

from services.inventory.api import InventoryApi
from services.inventory.indexes import ensure_search_indexes
from services.inventory.reads import Reads, read_view
from services.inventory.tables import TABLES, Certificate
from shared.db import Database
from tests.bench.common import percentile, report

ROWS = int(os.environ.get("CERTBUS_BENCH_SEARCH_ROWS", "1000000"))
REPEAT = int(os.environ.get("CERTBUS_BENCH_SEARCH_REPEAT", "15"))
POSTGRES = os.environ.get("CERTBUS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

FIRST = [
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "niaj",
    "olivia",
    "peggy",
    "rupert",
    "sybil",
    "trent",
    "victor",
    "walter",
]
LAST = ["smith", "jones", "brown", "taylor", "wilson", "davies", "evans", "thomas", "roberts"]
TEMPLATES = ["user-client", "server", "vpn", "code-signing", "email"]
ALGORITHMS = (
    ["ecdsa-with-SHA256"] * 12 + ["sha256WithRSAEncryption"] * 6 + ["sha1WithRSAEncryption"]
)
COLUMNS = ["cert_id", "serial", "issuer_ca", "issuer_dn", "subject_dn", "cn", "sans",
           "thumbprint_sha1", "thumbprint_sha256", "public_key_sha256", "not_before", "not_after",
           "template", "key_type", "key_size", "signature_algorithm", "owner", "device",
           "request_id", "status", "revocation_reason", "revocation_comment", "revoked_at",
           "metadata", "certificate_pem", "chain_pem", "source", "recorded_at"]  # fmt: skip


def generate(n: int, now: datetime) -> list[tuple[Any, ...]]:
    rnd = random.Random(42)
    rows = []
    for i in range(n):
        first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
        user = f"{first}.{last}{i // 171}"
        cn = f"{user}.example.com" if i % 3 else user
        not_before = now - timedelta(days=rnd.randrange(0, 760), minutes=rnd.randrange(1440))
        revoked = i % 31 == 0
        rows.append((
            f"c{i:07d}", format(rnd.getrandbits(120) | 1 << 119, "x"), "issuing-ec",
            "CN=certbus issuing CA,O=Example", f"CN={cn},O=Example", cn, "[]",
            format(rnd.getrandbits(160), "040x"), format(rnd.getrandbits(256), "064x"),
            format(rnd.getrandbits(256), "064x"), not_before, not_before + timedelta(days=730),
            TEMPLATES[i % len(TEMPLATES)], "EC-secp256r1" if i % 3 else "RSA",
            256 if i % 3 else 2048, ALGORITHMS[i % len(ALGORITHMS)], user, f"{user}-laptop",
            None, "revoked" if revoked else "active", "superseded" if revoked else None, None,
            now if revoked else None, "{}", None, "[]", "issued", now,
        ))  # fmt: skip
    return rows


FTS = (
    "cert_id IN (SELECT r.cert_id FROM inventory_search_row r JOIN inventory_search s "
    "ON s.rowid = r.id WHERE inventory_search MATCH ?)"
)


def queries(sample: tuple[Any, ...]) -> list[dict[str, Any]]:
    """The search language, the hand-written WHERE with its parameters, and on SQLite (where a
    trigram index answers substrings) the hand-written WHERE that uses that index."""
    cn, serial = sample[5], sample[1]
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    soon = today + timedelta(days=30)

    def q(name: str, text: str, where: str, params: list[Any], **sqlite: Any) -> dict[str, Any]:
        return {"name": name, "text": text, "where": where, "params": params, **sqlite}

    return [
        q("equality CN", f'CN -eq "{cn}"', "lower(cn) = ?", [cn.lower()]),
        q("equality serial", f"SerialNumber -eq {serial}", "serial = ?", [serial]),
        q("prefix CN", 'CN -startswith "grace.tay"', "lower(cn) >= ? AND lower(cn) < ? "
          "AND lower(cn) LIKE ?", ["grace.tay", "grace.taz", "grace.tay%"]),
        q("contains CN", 'CN -contains "wilson12"', "lower(cn) LIKE ?", ["%wilson12%"],
          sqlite_where=f"{FTS} AND lower(cn) LIKE ?",
          sqlite_params=['cn : "wilson12"', "%wilson12%"]),
        q("contains DN", 'DN -contains "olivia.evans3"', "lower(subject_dn) LIKE ?",
          ["%olivia.evans3%"], sqlite_where=f"{FTS} AND lower(subject_dn) LIKE ?",
          sqlite_params=['subject_dn : "olivia.evans3"', "%olivia.evans3%"]),
        q("endswith CN", 'CN -endswith "smith17"', "lower(cn) LIKE ?", ["%smith17"],
          sqlite_where=f"{FTS} AND lower(cn) LIKE ?",
          sqlite_params=['cn : "smith17"', "%smith17"]),
        q("contains CN, many matches", 'CN -contains "example"', "lower(cn) LIKE ?",
          ["%example%"], sqlite_where=f"{FTS} AND lower(cn) LIKE ?",
          sqlite_params=['cn : "example"', "%example%"]),
        q("date range", 'NotAfter -ge "%TODAY%" AND NotAfter -lt "%TODAY+30%"',
          "not_after >= ? AND not_after < ?", [today, soon]),
        q("combined", 'CN -contains "alice" AND (NotAfter -lt "%TODAY+30%" OR '
          'SignatureAlgorithm -eq "sha1WithRSAEncryption")',
          "lower(cn) LIKE ? AND (not_after < ? OR lower(signature_algorithm) = ?)",
          ["%alice%", soon, "sha1withrsaencryption"],
          sqlite_where=f"{FTS} AND lower(cn) LIKE ? AND (not_after < ? OR "
          "lower(signature_algorithm) = ?)",
          sqlite_params=['cn : "alice"', "%alice%", soon, "sha1withrsaencryption"]),
    ]  # fmt: skip


def load_sqlite(path: Path, rows: list[tuple[Any, ...]]) -> float:
    engine = create_engine(f"sqlite:///{path}")
    table = Certificate.__table__
    SQLModel.metadata.create_all(engine, tables=TABLES)
    for index in table.indexes:
        index.drop(engine)
    engine.dispose()
    start = time.perf_counter()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    marks = ",".join("?" * len(COLUMNS))
    conn.executemany(
        f"INSERT INTO inventory_certificate ({','.join(COLUMNS)}) VALUES ({marks})",
        [_sqlite_row(r) for r in rows],
    )
    conn.commit()
    conn.close()
    engine = create_engine(f"sqlite:///{path}")
    for index in table.indexes:
        index.create(engine)
    engine.dispose()
    return time.perf_counter() - start


async def index_sqlite(path: Path) -> float:
    """Build the trigram index over the loaded rows, as inventory does at its first start."""
    start = time.perf_counter()
    db = Database(f"sqlite+aiosqlite:///{path}")
    if not await ensure_search_indexes(db):
        raise AssertionError("the trigram index could not be built")
    await db.dispose()
    seconds = time.perf_counter() - start
    conn = sqlite3.connect(path)
    conn.execute("ANALYZE")
    conn.close()
    return seconds


def _sqlite_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v for v in row)


async def load_postgres(url: str, rows: list[tuple[Any, ...]]) -> float:
    import asyncpg

    db = Database(url, schema="inventory")
    await db.create_all(tables=TABLES)
    await db.dispose()
    start = time.perf_counter()
    conn = await asyncpg.connect(url, server_settings={"search_path": "inventory"})
    try:
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE tablename = 'inventory_certificate' AND indexname "
            "NOT LIKE '%pkey'"
        )
        for ix in indexes:
            await conn.execute(f'DROP INDEX "{ix["indexname"]}"')
        await conn.copy_records_to_table("inventory_certificate", records=rows, columns=COLUMNS)
        for ix in indexes:
            await conn.execute(ix["indexdef"])
    finally:
        await conn.close()
    db = Database(url, schema="inventory")
    await ensure_search_indexes(db)
    await db.dispose()
    conn = await asyncpg.connect(url, server_settings={"search_path": "inventory"})
    await conn.execute("ANALYZE inventory_certificate")
    await conn.close()
    return time.perf_counter() - start


async def measure_ours(db: Reads, text: str) -> tuple[list[float], int]:
    api, times, total = InventoryApi(db), [], 0
    for _ in range(REPEAT):
        start = time.perf_counter()
        result = await api.certs_list({"query": text, "limit": 100})
        times.append((time.perf_counter() - start) * 1000)
        total = result["total"]
    return times, total


def measure_sqlite_baseline(path: Path, where: str, params: list[Any]) -> tuple[list[float], int]:
    conn = sqlite3.connect(path)
    params = _sqlite_row(tuple(params))  # type: ignore[assignment]
    times, total = [], 0
    for _ in range(REPEAT):
        start = time.perf_counter()
        conn.execute(
            f"SELECT * FROM inventory_certificate WHERE {where} "  # noqa: S608 - fixed text
            "ORDER BY not_after DESC, cert_id LIMIT 100",
            params,
        ).fetchall()
        total = conn.execute(
            f"SELECT count(*) FROM inventory_certificate WHERE {where}",  # noqa: S608
            params,
        ).fetchone()[0]
        times.append((time.perf_counter() - start) * 1000)
    conn.close()
    return times, total


async def measure_pg_baseline(url: str, where: str, params: list[Any]) -> tuple[list[float], int]:
    import asyncpg

    n = iter(range(1, 100))
    sql_where = "".join(f"${next(n)}" if ch == "?" else ch for ch in where)
    conn = await asyncpg.connect(url, server_settings={"search_path": "inventory"})
    times, total = [], 0
    try:
        for _ in range(REPEAT):
            start = time.perf_counter()
            await conn.fetch(
                f"SELECT * FROM inventory_certificate WHERE {sql_where} "  # noqa: S608
                "ORDER BY not_after DESC, cert_id LIMIT 100",
                *params,
            )
            total = await conn.fetchval(
                f"SELECT count(*) FROM inventory_certificate WHERE {sql_where}", *params
            )  # noqa: S608
            times.append((time.perf_counter() - start) * 1000)
    finally:
        await conn.close()
    return times, total


def summarise(
    name: str, ours: list[float], base: list[float], total: int, base_total: int
) -> dict[str, Any]:
    if total != base_total:
        raise AssertionError(f"{name}: search found {total}, hand-written SQL {base_total}")
    ours_ms, base_ms = statistics.median(ours), statistics.median(base)
    return {
        "matches": total,
        "median_ms": round(ours_ms, 2),
        "p95_ms": round(percentile(ours, 95), 2),
        "baseline_median_ms": round(base_ms, 2),
        "ratio": round(ours_ms / max(base_ms, 1e-6), 2),
    }


async def run_sqlite(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    path = Path(tempfile.mkdtemp()) / "search.db"
    load_seconds = load_sqlite(path, rows)
    index_seconds = await index_sqlite(path)
    url = f"sqlite+aiosqlite:///{path}"
    db = read_view(Database(url), url)
    out: dict[str, Any] = {
        "load_seconds": round(load_seconds, 1),
        "trigram_index_build_seconds": round(index_seconds, 1),
        "file_mb": round(path.stat().st_size / 2**20),
    }
    for spec in queries(rows[len(rows) // 2]):
        name = spec["name"]
        ours, total = await measure_ours(db, spec["text"])
        where, params = spec.get("sqlite_where", spec["where"]), spec.get("sqlite_params")
        base, base_total = measure_sqlite_baseline(path, where, params or spec["params"])
        out[name] = summarise(name, ours, base, total, base_total)
        if "sqlite_where" in spec:  # what the same search costs without the index
            scan, scan_total = measure_sqlite_baseline(path, spec["where"], spec["params"])
            assert scan_total == total, f"{name}: index found {total}, scan {scan_total}"
            out[name]["full_scan_median_ms"] = round(statistics.median(scan), 2)
    await db.dispose()
    path.unlink()
    return out


async def run_postgres(rows: list[tuple[Any, ...]]) -> dict[str, Any] | None:
    import asyncpg

    try:
        admin = await asyncpg.connect(POSTGRES, timeout=3)
    except Exception:  # noqa: BLE001 - no server: SQLite figures only
        return None
    name = f"certbus_bench_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES.rsplit('/', 1)[0]}/{name}"
    try:
        out: dict[str, Any] = {"load_seconds": round(await load_postgres(url, rows), 1)}
        db = Database(url, schema="inventory")
        for spec in queries(rows[len(rows) // 2]):
            qname = spec["name"]
            ours, total = await measure_ours(db, spec["text"])
            base, base_total = await measure_pg_baseline(url, spec["where"], spec["params"])
            out[qname] = summarise(qname, ours, base, total, base_total)
        await db.dispose()
        return out
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> dict[str, Any]:
    now = datetime.now(UTC)
    start = time.perf_counter()
    rows = generate(ROWS, now)
    print(f"generated {ROWS:,} rows in {time.perf_counter() - start:.1f}s", flush=True)
    figures: dict[str, Any] = {"rows": ROWS, "repeat": REPEAT}
    figures["sqlite"] = asyncio.run(run_sqlite(rows))
    print("sqlite done", flush=True)
    pg = asyncio.run(run_postgres(rows))
    if pg is not None:
        figures["postgres"] = pg
    flat = {"rows": ROWS}
    for dbname in ("sqlite", "postgres"):
        for qname, f in figures.get(dbname, {}).items():
            if isinstance(f, dict):
                scan = f.get("full_scan_median_ms")
                flat[f"{dbname} {qname} median ms (baseline, ratio)"] = (
                    f"{f['median_ms']} ({f['baseline_median_ms']}, x{f['ratio']}) "
                    f"{f['matches']} matches" + (f"; full scan {scan}" if scan else "")
                )
            else:
                flat[f"{dbname} {qname}"] = f
    report("search", figures)
    for key, value in flat.items():
        print(f"  {key:<55} {value}")
    return figures


if __name__ == "__main__":
    main()
