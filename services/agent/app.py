"""The agent's composition root: a durable consumer of this machine's jobs, no database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from services.agent.errors import JobError, RetryLater
from services.agent.settings import AgentSettings
from services.agent.worker import Hook, Worker
from shared import subjects
from shared.bus import RpcError, rpc_call
from shared.events import AgentHeartbeat, AgentJob
from shared.runtime import ServiceRuntime

SERVICE = "agent"
# How much of a post-install command's stderr goes into the job result, in bytes.
STDERR_TAIL = 2048
# How long a timed-out command's output may take to drain once its process group is killed.
DRAIN_SECONDS = 5.0

log = logging.getLogger("certbus.agent")


def post_install(command: str, timeout: float) -> Hook:
    """Run the operator's command after an install (reload a web server, say). Its outcome is
    returned for the job's result: the certificate stays installed whatever the command does."""

    def run(job: AgentJob, store_path: Path) -> dict[str, Any]:
        env = {
            "CERTBUS_STORE_PATH": str(store_path),
            "CERTBUS_ALIAS": job.target.alias if job.target else "",
            "CERTBUS_CERT_ID": job.cert_id or "",
            "CERTBUS_SERIAL": job.serial or "",
        }
        outcome = run_command(command, timeout, {**os.environ, **env})
        if outcome["timed_out"]:
            log.warning("job %s: post-install command %r timed out after %ss: %s",
                        job.job_id, command, timeout, outcome["stderr_tail"])  # fmt: skip
        elif outcome["exit_code"] != 0:
            log.warning("job %s: post-install command %r failed (%s): %s", job.job_id, command,
                        outcome.get("error") or f"exit code {outcome['exit_code']}",
                        outcome["stderr_tail"])  # fmt: skip
        return outcome

    return run


def run_command(command: str, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    """Run a shell command in its own process group, killed whole when it outlasts the timeout
    (a shell's children included); what it exited with and the end of its stderr."""
    outcome: dict[str, Any] = {
        "command": command, "exit_code": None, "stderr_tail": "", "timed_out": False,
    }  # fmt: skip
    try:
        proc = subprocess.Popen(
            command, shell=True, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        outcome["error"] = f"{type(exc).__name__}: {exc}"
        return outcome
    try:
        _, err = proc.communicate(timeout=timeout)
        outcome["exit_code"] = proc.returncode
    except subprocess.TimeoutExpired:
        outcome["timed_out"] = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            _, err = proc.communicate(timeout=DRAIN_SECONDS)
        except subprocess.TimeoutExpired:
            err = b""  # a process that left the group still holds stderr open
            if proc.stderr:
                proc.stderr.close()
            proc.wait()
    outcome["stderr_tail"] = (err or b"")[-STDERR_TAIL:].decode(errors="replace")
    return outcome


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
        except TimeoutError as exc:
            raise RetryLater(f"the issuer did not answer enroll.pfx: {exc}") from exc
        except RpcError as exc:
            if exc.status >= 500:
                raise RetryLater(f"{exc.code}: {exc.message}") from exc  # the issuer is away
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
