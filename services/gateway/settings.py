from __future__ import annotations

from shared.settings import CommonSettings


class GatewaySettings(CommonSettings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
