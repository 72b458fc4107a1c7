"""Fixtures the integration tests share (test files may define their own of the same name)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.inventory.app import build
from services.inventory.settings import InventorySettings
from shared.runtime import ServiceRuntime


@pytest.fixture
async def inventory(nats_url: str, database_url: str) -> AsyncIterator[ServiceRuntime]:
    """Inventory with the repository's policy, on SQLite and on PostgreSQL."""
    rt = build(
        InventorySettings(nats_url=nats_url, inventory_database_url=database_url, max_deliver=3)
    )
    await rt.app.start()
    yield rt
    await rt.app.stop()
