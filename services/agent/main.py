"""``certbus-agent --machine NAME --root DIR``: keep this machine's stores as certbus wants."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from services.agent.app import build
from services.agent.settings import AgentSettings
from shared import logs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="certbus-agent", description=__doc__)
    p.add_argument("--machine", help="this machine's name (default CERTBUS_MACHINE)")
    p.add_argument("--root", type=Path, help="directory the stores live under (CERTBUS_ROOT)")
    p.add_argument("--nats-url", help="NATS URL (default CERTBUS_NATS_URL)")
    p.add_argument("--heartbeat", type=float, help="seconds between heartbeats")
    p.add_argument("--post-install", help="command to run after each install")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> AgentSettings:
    overrides = {
        "machine": args.machine,
        "root": args.root,
        "nats_url": args.nats_url,
        "heartbeat_seconds": args.heartbeat,
        "post_install_command": args.post_install,
    }
    return AgentSettings(**{k: v for k, v in overrides.items() if v is not None})


def run(argv: list[str] | None = None) -> None:
    settings = settings_from(parse_args(argv))
    logs.configure(f"agent:{settings.machine}", settings.log_level)
    asyncio.run(build(settings).app.run())
