"""Inventory's composition root."""

from __future__ import annotations

from services.inventory import policy as policy_module
from services.inventory.admin_api import AdminApi
from services.inventory.api import InventoryApi
from services.inventory.handlers import Handlers, register
from services.inventory.indexes import ensure_search_indexes
from services.inventory.reads import read_view
from services.inventory.renewal_api import AutoRenewal, RenewalApi
from services.inventory.settings import InventorySettings
from services.inventory.tables import TABLES
from shared.db import Database
from shared.runtime import ServiceRuntime

SERVICE = "inventory"


def build(settings: InventorySettings | None = None) -> ServiceRuntime:
    settings = settings or InventorySettings()
    db = Database(settings.database(), schema=SERVICE)
    rt = ServiceRuntime(SERVICE, settings, db=db, tables=TABLES)
    policy = policy_module.load(settings.policy_path())
    register(rt, Handlers(rt, policy))
    reads = read_view(db, settings.database())
    InventoryApi(reads).register(rt)
    AdminApi(rt, settings.agent_offline_after_seconds, reads).register()
    RenewalApi(rt, reads).register()
    auto = AutoRenewal(rt, settings.renew_before_days, settings.renewal_check_seconds)
    rt.on_startup(auto.start)
    rt.on_shutdown(auto.stop)
    if reads is not db:
        rt.on_shutdown(reads.dispose)

    async def search_indexes() -> None:
        await ensure_search_indexes(db)

    rt.on_startup(search_indexes)
    return rt
