import asyncio

from services.metadata.app import build
from services.metadata.settings import MetadataSettings
from shared import logs

settings = MetadataSettings()
logs.configure("metadata", settings.log_level)
asyncio.run(build(settings).app.run())
