"""The notifier's composition root: channels and subscriptions from settings, a durable each."""

from __future__ import annotations

import httpx

from services.notifier.channels import Channel, EmailChannel, WebhookChannel
from services.notifier.handlers import NotifierHandlers
from services.notifier.settings import NotifierSettings
from services.notifier.subscriptions import ChannelSpec, Routing, Subscription, load
from services.notifier.tables import TABLES
from shared import subjects
from shared.clock import Clock, SystemClock
from shared.db import Database
from shared.events import CATALOG
from shared.runtime import ServiceRuntime

SERVICE = "notifier"

SUBJECTS = (subjects.CERT_ISSUED, subjects.CERT_REVOKED, subjects.USER_OFFBOARDING_COMPLETED)
"""What channels configured by plain settings (no subscriptions file) receive."""


def _email(settings: NotifierSettings, recipients: list[str], name: str | None = None) -> Channel:
    assert settings.notifier_smtp_host, "e-mail channels need CERTBUS_NOTIFIER_SMTP_HOST"
    return EmailChannel(
        settings.notifier_smtp_host,
        settings.notifier_smtp_port,
        settings.notifier_smtp_from,
        recipients,
        starttls=settings.notifier_smtp_starttls,
        username=settings.notifier_smtp_username,
        password=settings.notifier_smtp_password,
        name=name,
    )


def _from_spec(spec: ChannelSpec, settings: NotifierSettings, client: httpx.AsyncClient) -> Channel:
    if spec.type == "webhook":
        return WebhookChannel(str(spec.options["url"]), client, name=spec.name)
    to = spec.options.get("to") or settings.smtp_recipients()
    return _email(settings, [to] if isinstance(to, str) else list(to), name=spec.name)


def routing_from(settings: NotifierSettings, client: httpx.AsyncClient) -> Routing:
    routing = Routing()
    plain: list[Channel] = [WebhookChannel(url, client) for url in settings.webhook_urls()]
    if settings.notifier_smtp_host and settings.smtp_recipients():
        plain.append(_email(settings, settings.smtp_recipients()))
    for channel in plain:
        routing.add(channel, Subscription(channel.name, SUBJECTS))
    if settings.notifier_subscriptions_file:
        specs, subscriptions = load(settings.notifier_subscriptions_file)
        channels = {spec.name: _from_spec(spec, settings, client) for spec in specs}
        for subscription in subscriptions:
            routing.add(channels[subscription.channel], subscription)
    return routing


def build(settings: NotifierSettings | None = None, clock: Clock | None = None) -> ServiceRuntime:
    settings = settings or NotifierSettings()
    runtime = ServiceRuntime(
        SERVICE, settings, db=Database(settings.database(), schema=SERVICE), tables=TABLES
    )
    client = httpx.AsyncClient(timeout=settings.notifier_webhook_timeout)
    routing = routing_from(settings, client)
    handlers = NotifierHandlers(
        runtime,
        routing,
        clock or SystemClock(),
        lease_seconds=settings.notifier_lease_seconds,
        concurrency=settings.notifier_concurrency,
    )
    # cert.issued is always consumed: it tells later events' owner and template.
    for subject in sorted({*routing.subjects(CATALOG), *SUBJECTS}):
        runtime.consume(subject, handlers.deliver, batch_size=50)
    runtime.rpc("deliveries.list", handlers.deliveries_list)
    runtime.rpc("subscriptions.list", handlers.subscriptions_list)
    runtime.on_shutdown(client.aclose)
    return runtime
