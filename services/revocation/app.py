"""The revocation service's composition root: consumers, RPCs and the public HTTP endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from services.revocation.bucket import BucketCrlSource
from services.revocation.handlers import Handlers
from services.revocation.models import TABLES
from services.revocation.public import PublicServer, make_public_app
from services.revocation.settings import RevocationSettings
from shared import subjects
from shared.db import Database
from shared.events import UserOnboarded, UserUpdated
from shared.runtime import ServiceRuntime

SERVICE = "revocation"


@dataclass
class RevocationService:
    runtime: ServiceRuntime
    public: PublicServer
    db: Database
    settings: RevocationSettings


def wire(settings: RevocationSettings | None = None) -> RevocationService:
    settings = settings or RevocationSettings()
    db = Database(settings.db_url(), schema=SERVICE)
    runtime = ServiceRuntime(SERVICE, settings, db=db, tables=TABLES)
    crl_source = BucketCrlSource(settings.nats_url)
    handlers = Handlers(runtime, crl_source)

    runtime.consume(subjects.CERT_ISSUED, handlers.cert_issued)
    runtime.consume(subjects.CERT_INSTALLED, handlers.cert_installed)
    runtime.consume(subjects.CERT_REMOVED, handlers.cert_removed)
    runtime.consume(subjects.USER_ONBOARDED, handlers.user_onboarded, model=UserOnboarded)
    runtime.consume(subjects.USER_UPDATED, handlers.user_onboarded, model=UserUpdated)
    runtime.consume(subjects.DEVICE_ASSIGNED, handlers.device_assigned)
    runtime.consume(subjects.DEVICE_UNASSIGNED, handlers.device_unassigned)
    runtime.consume(subjects.USER_OFFBOARDED, handlers.user_offboarded)
    runtime.consume(subjects.CA_CREATED, handlers.ca_created)
    runtime.consume(subjects.CRL_PUBLISHED, handlers.crl_published, batch_size=10)

    public = PublicServer(
        make_public_app(db, settings.crl_max_age_seconds),
        settings.public_host,
        settings.public_port,
    )
    runtime.on_startup(public.start)
    runtime.on_shutdown(public.stop)
    runtime.on_shutdown(crl_source.close)
    return RevocationService(runtime, public, db, settings)


def build(settings: RevocationSettings | None = None) -> ServiceRuntime:
    return wire(settings).runtime
