"""The issuer's composition root."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlmodel import select

from services.issuer.ca import CaRegistry, open_hierarchy, select_cas
from services.issuer.crlpub import CrlPublisher, CrlTiming
from services.issuer.handlers import IssuerHandlers
from services.issuer.issuance import Issuer
from services.issuer.objstore import NatsObjectStore
from services.issuer.pkcs11signer import HsmConfig, HsmKeys, open_session
from services.issuer.rpc import IssuerRpc
from services.issuer.settings import IssuerSettings
from services.issuer.tables import TABLES, AnnouncedCa
from services.issuer.templates import TemplateCatalog
from shared import subjects
from shared.db import Database
from shared.events import CaCreated, derived_id
from shared.pki import pem, thumbprint
from shared.runtime import ServiceRuntime

log = logging.getLogger("certbus.issuer")


def build(settings: IssuerSettings | None = None) -> ServiceRuntime:
    settings = settings or IssuerSettings()
    db = Database(settings.issuer_db_url(), schema="issuer")
    rt = ServiceRuntime("issuer", settings, db=db, tables=TABLES)
    hsm_session = None
    hsm = None
    if settings.pkcs11_cas:
        hsm_session = open_session(
            HsmConfig(
                settings.pkcs11_module, settings.pkcs11_token or "certbus", settings.hsm_pin()
            )
        )
        hsm = HsmKeys(hsm_session)
    cas = open_hierarchy(
        settings.key_dir(),
        settings.passphrase(),
        select_cas(settings.issuer_cas),
        settings.public_base_url,
        hsm=hsm,
        hsm_cas=settings.pkcs11_cas,
    )
    templates = TemplateCatalog(settings.templates_path())
    issuer = Issuer(cas, templates, settings.public_base_url, delta_crls=settings.delta_crls)
    store = NatsObjectStore(settings.nats_url)
    crls = CrlPublisher(
        cas,
        rt.unit_of_work,
        store,
        settings.public_base_url,
        CrlTiming(
            validity=timedelta(hours=settings.crl_validity_hours),
            refresh=timedelta(hours=settings.crl_refresh_hours),
            debounce=settings.crl_debounce_seconds,
            max_delay=settings.crl_max_delay_seconds,
        ),
        deltas=settings.delta_crls,
    )
    handlers = IssuerHandlers(rt, issuer, crls)
    rt.consume(
        subjects.CERT_REQUESTED,
        handlers.cert_requested,
        on_invalid=handlers.cert_requested_invalid,
        batch_size=settings.issuance_batch_size,
        max_wait=settings.issuer_max_wait,
    )
    rt.consume(
        subjects.CERT_RENEWAL_REQUESTED,
        handlers.renewal_requested,
        on_invalid=handlers.cert_requested_invalid,
        batch_size=100,
        max_wait=settings.issuer_max_wait,
    )
    IssuerRpc(rt, issuer, settings.ocsp_signer_validity_days).register()
    for subject, handler in (
        (subjects.CERT_REVOKED, handlers.cert_revoked),
        (subjects.CERT_RELEASED, handlers.cert_released),
    ):
        rt.consume(subject, handler, batch_size=1000, max_wait=settings.issuer_max_wait)
    rt.issuer = issuer  # type: ignore[attr-defined]
    rt.crls = crls  # type: ignore[attr-defined]

    reloader: list[asyncio.Task[None]] = []

    async def startup() -> None:
        await announce_cas(rt, cas)
        await store.open()
        crls.start()
        reloader.append(asyncio.create_task(_watch_templates(templates), name="template-reload"))

    async def shutdown() -> None:
        for task in reloader:
            task.cancel()
        await crls.stop()
        await store.close()
        if hsm_session is not None:
            hsm_session.close()

    rt.on_startup(startup)
    rt.on_shutdown(shutdown)
    return rt


async def announce_cas(rt: ServiceRuntime, cas: CaRegistry) -> None:
    """Record each CA once and announce it with ``ca.created``, in the same transaction."""
    async with rt.unit_of_work() as uow:
        known = set((await uow.session.exec(select(AnnouncedCa.name))).all())
        for ca in cas.all():
            if ca.name in known:
                continue
            fingerprint = thumbprint(ca.certificate)
            uow.session.add(
                AnnouncedCa(
                    name=ca.name,
                    parent=ca.parent.name if ca.parent else None,
                    key_type=ca.key_type,
                    fingerprint_sha256=fingerprint,
                    certificate_pem=pem(ca.certificate),
                )
            )
            uow.emit(
                CaCreated(
                    event_id=derived_id("ca.created", ca.name, fingerprint),
                    ca=ca.name,
                    subject_dn=ca.certificate.subject.rfc4514_string(),
                    key_type=ca.key_type,
                    certificate_pem=pem(ca.certificate),
                    parent=ca.parent.name if ca.parent else None,
                )
            )


async def _watch_templates(templates: TemplateCatalog, interval: float = 2.0) -> None:
    while True:
        await asyncio.sleep(interval)
        templates.reload_if_changed()
