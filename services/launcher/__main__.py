"""``make run``: the whole of certbus on this machine, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from services.launcher.system import System


class LauncherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CERTBUS_", extra="ignore")

    var_dir: Path = Path("var")
    nats_url: str | None = None
    nats_port: int = 4223
    gateway_port: int = 8080
    public_port: int = 8081
    agent_machine: str = socket.gethostname()
    agent_root: Path | None = None


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def main() -> int:
    settings = LauncherSettings()
    var_dir = settings.var_dir.resolve()
    for port, what in ((settings.gateway_port, "gateway"), (settings.public_port, "public PKI")):
        if _port_in_use(port):
            print(
                f"port {port} ({what}) is already in use: is certbus already running? "
                f"Set CERTBUS_{'GATEWAY' if what == 'gateway' else 'PUBLIC'}_PORT to move it.",
                file=sys.stderr,
            )
            return 1
    if not settings.nats_url and _port_in_use(settings.nats_port):
        print(
            f"port {settings.nats_port} (nats) is in use; set CERTBUS_NATS_PORT or "
            "CERTBUS_NATS_URL",
            file=sys.stderr,
        )
        return 1
    agent_root = (settings.agent_root or var_dir / "agents" / settings.agent_machine).resolve()
    system = System(
        var_dir=var_dir,
        nats_url=settings.nats_url,
        nats_port=settings.nats_port,
        gateway_port=settings.gateway_port,
        public_port=settings.public_port,
        agents={settings.agent_machine: agent_root},
    )
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print(f"starting certbus (data in {var_dir}) ...", flush=True)
    try:
        system.start()
    except Exception as exc:  # noqa: BLE001
        print(f"certbus did not start: {exc}", file=sys.stderr)
        system.stop()
        return 1
    _banner(system, settings.agent_machine, agent_root)
    try:
        while not stopping:
            for proc in system.processes.values():
                if not proc.running and not stopping:
                    print(
                        f"{proc.name} exited ({proc.popen.returncode if proc.popen else '?'}); "
                        f"restarting — see {proc.log_path}",
                        flush=True,
                    )
                    proc.start()
            time.sleep(1)
    finally:
        print("\nstopping certbus ...", flush=True)
        system.stop()
        print("stopped.", flush=True)
    return 0


def _banner(system: System, machine: str, agent_root: Path) -> None:
    rows = [
        ("nats (JetStream)", system.nats_url or ""),
        ("gateway (Web API)", f"{system.gateway_url}   docs: {system.gateway_url}/docs"),
        ("public PKI (CRL, OCSP)", system.public_url),
        ("services", "issuer, revocation, inventory, metadata, notifier"),
        (f"agent {machine}", str(agent_root)),
        ("logs", str(system.var_dir / "logs")),
    ]
    print("\ncertbus is running:")
    for name, where in rows:
        print(f"  {name:<24} {where}")
    cli = ".venv/bin/certbus"
    print(
        f"""
Try it (in another terminal):
  {cli} health
  {cli} hr onboard alice --email alice@example.com --device {machine}
  {cli} certs list --owner alice
  ls {agent_root}/certs/user-client/
  {cli} hr offboard alice
  curl -s {system.public_url}/crl/issuing-ec.crl | openssl crl -inform DER -noout -text

Ctrl-C stops everything; the next `make run` reuses the CA and the data in {system.var_dir}.
""",
        flush=True,
    )
    os.environ.setdefault("CERTBUS_URL", system.gateway_url)


if __name__ == "__main__":
    sys.exit(main())
