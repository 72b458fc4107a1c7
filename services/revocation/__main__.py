import asyncio

from services.revocation.app import build
from services.revocation.settings import RevocationSettings
from shared import logs

settings = RevocationSettings()
logs.configure("revocation", settings.log_level)
asyncio.run(build(settings).app.run())
