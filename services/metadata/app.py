"""The metadata service's composition root."""

from __future__ import annotations

from services.metadata.handlers import MetadataHandlers
from services.metadata.settings import MetadataSettings
from services.metadata.tables import TABLES
from shared import subjects
from shared.clock import Clock, SystemClock
from shared.db import Database
from shared.runtime import ServiceRuntime

SERVICE = "metadata"


def build(settings: MetadataSettings | None = None, clock: Clock | None = None) -> ServiceRuntime:
    settings = settings or MetadataSettings()
    runtime = ServiceRuntime(
        SERVICE, settings, db=Database(settings.database(), schema=SERVICE), tables=TABLES
    )
    handlers = MetadataHandlers(
        runtime, clock or SystemClock(), strict=settings.metadata_strict_fields
    )
    runtime.on_startup(handlers.start)
    runtime.consume(subjects.CERT_ISSUED, handlers.cert_issued)
    runtime.consume(subjects.USER_OFFBOARDED, handlers.user_offboarded)
    runtime.consume(subjects.USER_ONBOARDED, handlers.user_onboarded)
    runtime.rpc("get", handlers.get)
    runtime.rpc("set", handlers.set)
    runtime.rpc("compare", handlers.compare)
    runtime.rpc("history", handlers.history)
    runtime.rpc("fields.list", handlers.fields_list)
    runtime.rpc("fields.define", handlers.fields_define)
    return runtime
