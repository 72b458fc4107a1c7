from __future__ import annotations

from shared.settings import CommonSettings


class MetadataSettings(CommonSettings):
    metadata_database_url: str | None = None
    metadata_strict_fields: bool = False
    """When true, only defined fields may be set over the API."""

    def database(self) -> str:
        return self.database_url_for("metadata", self.metadata_database_url)
