from __future__ import annotations

from pathlib import Path

from shared.settings import CommonSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class InventorySettings(CommonSettings):
    inventory_database_url: str | None = None
    policy_file: Path = Path("infra/policy.yaml")
    agent_offline_after_seconds: float = 90.0
    consumer_max_wait: float = 0.25
    renew_before_days: int = 30
    """Installed certificates are renewed this many days before they expire (0: never)."""
    renewal_check_seconds: float = 3600.0

    def database(self) -> str:
        return self.database_url_for("inventory", self.inventory_database_url)

    def policy_path(self) -> Path:
        """The policy file as given, else relative to the repository root."""
        if self.policy_file.is_absolute() or self.policy_file.exists():
            return self.policy_file
        return REPO_ROOT / self.policy_file
