import asyncio

from services.notifier.app import build
from services.notifier.settings import NotifierSettings
from shared import logs

settings = NotifierSettings()
logs.configure("notifier", settings.log_level)
asyncio.run(build(settings).app.run())
