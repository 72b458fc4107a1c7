from __future__ import annotations

from pathlib import Path

from shared.settings import CommonSettings


class AgentSettings(CommonSettings):
    machine: str = ""
    root: Path = Path("var/agent")
    heartbeat_seconds: float = 30.0
    post_install_command: str | None = None
    post_install_timeout: float = 60.0
    agent_version: str = "1"
    store_password: str = "changeit"
    consumer_max_wait: float = 0.2
