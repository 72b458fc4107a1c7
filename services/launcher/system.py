"""Run the whole system on one machine: nats-server, every service, a gateway and agents.

``make run`` uses it interactively; the end-to-end tests use it to start, kill and restart
processes exactly as an operator would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.testing.servers import NatsServer

WORKERS = ("issuer", "revocation", "inventory", "metadata", "notifier")


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its life
        self.popen = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if not self.running:
            return
        assert self.popen
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def kill(self) -> None:
        """kill -9: no shutdown hooks, no flush — the crash the guarantees are about."""
        if self.running:
            assert self.popen
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()


@dataclass
class System:
    var_dir: Path
    nats_url: str | None = None
    nats_port: int = 4223
    gateway_port: int = 8080
    public_port: int = 8081
    agents: dict[str, Path] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    nats: NatsServer | None = None
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTBUS_")}
        env.update(
            {
                "CERTBUS_NATS_URL": self.nats_url or "",
                "CERTBUS_VAR_DIR": str(self.var_dir.resolve()),
                "CERTBUS_GATEWAY_PORT": str(self.gateway_port),
                "CERTBUS_PUBLIC_PORT": str(self.public_port),
                "CERTBUS_PUBLIC_BASE_URL": self.public_url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(
            {
                k: v
                for k, v in os.environ.items()
                if k.startswith("CERTBUS_") and k not in ("CERTBUS_NATS_URL", "CERTBUS_VAR_DIR")
            }
        )
        env.update(self.extra_env)
        return env

    def start_nats(self) -> None:
        if self.nats_url:
            return
        (self.var_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.nats = NatsServer(
            store_dir=self.var_dir / "nats",
            port=self.nats_port,
            log_file=self.var_dir / "logs" / "nats-server.log",
        ).start()
        self.nats_url = self.nats.url

    def define(self) -> None:
        py = sys.executable
        logs = self.var_dir / "logs"
        env = self._env()
        for name in WORKERS:
            self.processes[name] = Process(
                name, [py, "-m", f"services.{name}"], env, logs / f"{name}.log"
            )
        self.processes["gateway"] = Process(
            "gateway", [py, "-m", "services.gateway"], env, logs / "gateway.log"
        )
        for machine, root in self.agents.items():
            self.processes[f"agent:{machine}"] = Process(
                f"agent:{machine}",
                [py, "-m", "services.agent", "--machine", machine, "--root", str(root)],
                env,
                logs / f"agent-{machine}.log",
            )

    def start(self, wait: float = 90.0) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.start_nats()
        self.define()
        for proc in self.processes.values():
            proc.start()
        self.wait_healthy(wait)

    def wait_healthy(self, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            dead = [p.name for p in self.processes.values() if p.popen and not p.running]
            if dead:
                raise RuntimeError(f"exited during start: {dead}; see {self.var_dir / 'logs'}")
            try:
                r = httpx.get(f"{self.gateway_url}/v1/health", timeout=3)
                last = r.json()
                if r.status_code == 200:
                    return last  # type: ignore[return-value]
            except (httpx.HTTPError, ValueError) as exc:
                last = exc
            time.sleep(0.3)
        raise TimeoutError(f"system not healthy after {timeout}s: {last}")

    def restart(self, name: str) -> None:
        self.processes[name].stop()
        self.processes[name].start()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every process at once, wait for them, then stop nats-server."""
        running = [p for p in self.processes.values() if p.running]
        for proc in running:
            assert proc.popen
            proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running:
            assert proc.popen
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.nats:
            self.nats.stop()
