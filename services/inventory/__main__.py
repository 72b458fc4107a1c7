import asyncio

from services.inventory.app import build
from services.inventory.settings import InventorySettings
from shared import logs

settings = InventorySettings()
logs.configure("inventory", settings.log_level)
asyncio.run(build(settings).app.run())
