"""The notifier's composition root: channels chosen from settings, one durable per subject."""

from __future__ import annotations

import httpx

from services.notifier.channels import Channel, EmailChannel, WebhookChannel
from services.notifier.handlers import NotifierHandlers
from services.notifier.settings import NotifierSettings
from services.notifier.tables import TABLES
from shared import subjects
from shared.clock import Clock, SystemClock
from shared.db import Database
from shared.runtime import ServiceRuntime

SERVICE = "notifier"

SUBJECTS = (subjects.CERT_ISSUED, subjects.CERT_REVOKED, subjects.USER_OFFBOARDING_COMPLETED)


def channels_from(settings: NotifierSettings, client: httpx.AsyncClient) -> list[Channel]:
    channels: list[Channel] = [WebhookChannel(url, client) for url in settings.webhook_urls()]
    if settings.notifier_smtp_host and settings.smtp_recipients():
        channels.append(
            EmailChannel(
                settings.notifier_smtp_host,
                settings.notifier_smtp_port,
                settings.notifier_smtp_from,
                settings.smtp_recipients(),
                starttls=settings.notifier_smtp_starttls,
                username=settings.notifier_smtp_username,
                password=settings.notifier_smtp_password,
            )
        )
    return channels


def build(settings: NotifierSettings | None = None, clock: Clock | None = None) -> ServiceRuntime:
    settings = settings or NotifierSettings()
    runtime = ServiceRuntime(
        SERVICE, settings, db=Database(settings.database(), schema=SERVICE), tables=TABLES
    )
    client = httpx.AsyncClient(timeout=settings.notifier_webhook_timeout)
    handlers = NotifierHandlers(
        runtime,
        channels_from(settings, client),
        clock or SystemClock(),
        lease_seconds=settings.notifier_lease_seconds,
        concurrency=settings.notifier_concurrency,
    )
    for subject in SUBJECTS:
        runtime.consume(subject, handlers.deliver, batch_size=50)
    runtime.rpc("deliveries.list", handlers.deliveries_list)
    runtime.on_shutdown(client.aclose)
    return runtime
