"""The agent's composition root: a durable consumer of this machine's jobs, no database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.agent.errors import JobError
from services.agent.settings import AgentSettings
from services.agent.worker import Worker
from shared import subjects
from shared.bus import RpcError, rpc_call
from shared.events import AgentHeartbeat, AgentJob
from shared.runtime import ServiceRuntime

SERVICE = "agent"


def post_install(command: str, timeout: float) -> Callable[[AgentJob, Path], None]:
    """Run the operator's command after an install (reload a web server, say)."""

    def run(job: AgentJob, store_path: Path) -> None:
        env = {
            "CERTBUS_STORE_PATH": str(store_path),
            "CERTBUS_ALIAS": job.target.alias if job.target else "",
            "CERTBUS_CERT_ID": job.cert_id or "",
            "CERTBUS_SERIAL": job.serial or "",
        }
        subprocess.run(command, shell=True, check=False, timeout=timeout, env={**os.environ, **env})

    return run


def build(settings: AgentSettings | None = None) -> ServiceRuntime:
    settings = settings or AgentSettings()
    if not settings.machine:
        raise ValueError("the agent needs a machine name (--machine or CERTBUS_MACHINE)")
    rt = ServiceRuntime(SERVICE, settings, db=None)
    hook = None
    if settings.post_install_command:
        hook = post_install(settings.post_install_command, settings.post_install_timeout)
    loop: dict[str, asyncio.AbstractEventLoop] = {}

    def server_enroll(request: dict[str, Any]) -> dict[str, Any]:
        """Called from the worker's thread: the RPC runs on the event loop."""
        call = rpc_call(rt.broker, "issuer", "enroll.pfx", request, settings.rpc_timeout)
        try:
            return asyncio.run_coroutine_threadsafe(call, loop["loop"]).result(
                settings.rpc_timeout + 5
            )
        except RpcError as exc:
            if exc.status >= 500:
                raise  # the issuer is away: the job is retried
            raise JobError(exc.code, exc.message) from exc

    worker = Worker(
        settings.machine, settings.root, after_install=hook,
        store_password=settings.store_password, server_enroll=server_enroll,
        max_payload=lambda: rt.broker.connection.max_payload,
    )  # fmt: skip

    async def handle(jobs: list[AgentJob]) -> None:
        """Run this machine's jobs and report each outcome."""
        for job in jobs:
            events = await asyncio.to_thread(worker.run, job)
            for ev in events:
                await rt.publisher.publish(ev)

    rt.consume(
        subjects.agent_jobs(settings.machine), handle, model=AgentJob, batch_size=20, ack_wait=120.0
    )

    beat: dict[str, asyncio.Task[None]] = {}

    async def heartbeat() -> None:
        while True:
            ev = AgentHeartbeat(machine=settings.machine, version=settings.agent_version)
            with contextlib.suppress(Exception):
                await rt.publisher.publish(ev)
            await asyncio.sleep(settings.heartbeat_seconds)

    async def start_heartbeat() -> None:
        loop["loop"] = asyncio.get_running_loop()
        settings.root.mkdir(parents=True, exist_ok=True)
        beat["task"] = asyncio.create_task(heartbeat(), name="agent-heartbeat")

    async def stop_heartbeat() -> None:
        task = beat.pop("task", None)
        if task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    rt.on_startup(start_heartbeat)
    rt.on_shutdown(stop_heartbeat)
    rt.worker = worker  # type: ignore[attr-defined]
    return rt
