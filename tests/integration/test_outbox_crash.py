"""A process killed between its database commit and its publish still sends the event."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared.db import Database
from shared.runtime import ServiceRuntime
from shared.settings import CommonSettings
from tests.e2e.harness import collect_subject

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from shared.db import Database
    from shared.events import CertRejected
    from shared.runtime import ServiceRuntime
    from shared.settings import CommonSettings

    async def main():
        rt = ServiceRuntime("crashy", CommonSettings(nats_url=sys.argv[1]),
                            db=Database(sys.argv[2], schema="crashy"), tables=[])
        await rt.start_dependencies()
        async with rt.unit_of_work() as uow:
            uow.emit(CertRejected(event_id="committed-1", request_id="r1", code="c", message="m"))
        os.kill(os.getpid(), signal.SIGKILL)  # dies after the commit, before any publish

    asyncio.run(main())
    """
)


async def test_an_event_committed_before_a_kill_is_published_at_the_next_start(
    nats_url: str, database_url: str, tmp_path: Path
) -> None:
    child = subprocess.run(  # noqa: ASYNC221 - the child must finish (and be killed) first
        [sys.executable, "-c", CHILD, nats_url, database_url],
        env={**os.environ},
        capture_output=True,
        timeout=60,
    )
    assert child.returncode == -9, child.stderr.decode()
    assert await collect_subject(nats_url, "cert.rejected", idle=0.3) == []

    rt = ServiceRuntime(
        "crashy",
        CommonSettings(nats_url=nats_url),
        db=Database(database_url, schema="crashy"),
        tables=[],
    )
    await rt.app.start()
    try:
        assert rt.relay is not None
        await rt.relay.flush()
    finally:
        await rt.app.stop()
    events = await collect_subject(nats_url, "cert.rejected")
    assert [e["event_id"] for e in events] == ["committed-1"]
