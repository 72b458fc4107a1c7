"""Fixtures: a real nats-server per test, SQLite files, and a real PostgreSQL database.

The bus fixture takes ``NATS_URL`` when set (the streams are then purged between tests), else
starts the bundled ``nats-server`` on a free port with a temporary JetStream directory, else a
container through testcontainers where a Docker engine exists.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.testing.servers import NatsServer, nats_server_binary

POSTGRES_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def _bundled_available() -> bool:
    try:
        nats_server_binary()
        return True
    except FileNotFoundError:
        return False


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    external = os.environ.get("NATS_URL")
    if external:
        asyncio.run(_reset_external(external))
        yield external
        return
    if _bundled_available():
        server = NatsServer(
            store_dir=tmp_path / "jetstream", log_file=tmp_path / "nats.log"
        ).start()
        try:
            yield server.url
        finally:
            server.stop()
        return
    from testcontainers.nats import NatsContainer  # type: ignore[import-not-found]

    with NatsContainer("nats:2.10", jetstream=True) as container:
        yield container.nats_uri()


async def _reset_external(url: str) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    for info in await js.streams_info():
        await js.delete_stream(info.config.name)
    await nc.close()


def _postgres_admin_url() -> str | None:
    url = os.environ.get("CERTBUS_TEST_POSTGRES_URL", POSTGRES_DEFAULT)
    try:
        import asyncpg  # noqa: F401
    except ImportError:  # pragma: no cover
        return None

    async def probe() -> bool:
        import asyncpg

        try:
            conn = await asyncpg.connect(url, timeout=3)
        except Exception:  # noqa: BLE001
            return False
        await conn.close()
        return True

    if asyncio.run(probe()):
        return url
    return None


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    url = _postgres_admin_url()
    if url:
        yield url
        return
    if shutil.which("docker"):
        try:
            from testcontainers.postgres import PostgresContainer

            with PostgresContainer("postgres:16") as pg:
                yield pg.get_connection_url().replace("+psycopg2", "")
            return
        except Exception:  # noqa: BLE001 - no engine behind the client
            pass
    if os.environ.get("CERTBUS_REQUIRE_POSTGRES"):
        pytest.fail("PostgreSQL is required (CERTBUS_REQUIRE_POSTGRES) but none answers")
    pytest.skip("no PostgreSQL server answers; set CERTBUS_TEST_POSTGRES_URL")


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server, dropped afterwards."""
    import asyncpg

    name = f"certbus_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(postgres_admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base = postgres_admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[object]:
    import nats

    from shared.bus import ensure_streams

    await ensure_streams(nats_url)
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()
