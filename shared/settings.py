"""Settings shared by every process; each service extends them with its own.

Every value comes from the environment with the ``CERTBUS_`` prefix (``CERTBUS_NATS_URL``,
``CERTBUS_VAR_DIR``, ``CERTBUS_ISSUER_DATABASE_URL`` ...), so nothing is hard-wired.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CERTBUS_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4223"
    var_dir: Path = Path("var")
    database_url: str | None = Field(
        default=None,
        description="One database for all services (each keeps its own schema on PostgreSQL, "
        "its own file on SQLite); a service-specific URL wins over it.",
    )
    public_base_url: str = "http://127.0.0.1:8081"
    log_level: str = "INFO"
    max_deliver: int = 8
    consumer_max_wait: float = Field(
        default=1.0,
        description="Seconds a consumer's pull waits to fill its batch: the most a lone event "
        "waits before its handler runs. Lower means less latency and more polling.",
    )
    rpc_timeout: float = 5.0
    stream_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="JetStream replicas of every stream (3 on a 3-node cluster in production).",
    )

    def database_url_for(self, service: str, specific: str | None = None) -> str:
        if specific:
            return specific
        if self.database_url:
            return self.database_url
        self.var_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{(self.var_dir / f'{service}.db').resolve()}"
