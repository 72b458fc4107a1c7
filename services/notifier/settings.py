from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import CommonSettings


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class NotifierSettings(CommonSettings):
    notifier_database_url: str | None = None
    notifier_webhook_urls: str = Field(
        default="", description="Comma-separated webhook URLs; every event goes to each of them."
    )
    notifier_webhook_timeout: float = 10.0
    notifier_smtp_host: str | None = None
    notifier_smtp_port: int = 25
    notifier_smtp_from: str = "certbus@localhost"
    notifier_smtp_to: str = Field(default="", description="Comma-separated recipients.")
    notifier_smtp_starttls: bool = False
    notifier_smtp_username: str | None = None
    notifier_smtp_password: str | None = None
    notifier_subscriptions_file: Path | None = Field(
        default=None, description="YAML naming channels and which subjects each receives."
    )
    notifier_lease_seconds: float = 120.0
    notifier_concurrency: int = 16

    def database(self) -> str:
        return self.database_url_for("notifier", self.notifier_database_url)

    def webhook_urls(self) -> list[str]:
        return _split(self.notifier_webhook_urls)

    def smtp_recipients(self) -> list[str]:
        return _split(self.notifier_smtp_to)
