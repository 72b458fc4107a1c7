import asyncio

from services.issuer.app import build
from services.issuer.settings import IssuerSettings
from shared import logs

if __name__ == "__main__":
    settings = IssuerSettings()
    logs.configure("issuer", settings.log_level)
    asyncio.run(build(settings).app.run())
