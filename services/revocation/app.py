"""The revocation service's composition root: consumers, RPCs, the OCSP signers and the public
HTTP endpoint (CRLs, CA certificates, OCSP) in one process."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from faststream.nats import NatsBroker

from services.revocation.api import RevocationApi
from services.revocation.bucket import BucketCrlSource
from services.revocation.handlers import Handlers
from services.revocation.models import TABLES
from services.revocation.ocsp import CertificateStatus, Responder
from services.revocation.public import PublicServer, make_public_app
from services.revocation.reads import ReadView
from services.revocation.settings import RevocationSettings
from services.revocation.signers import SignerKeyring, keyring_passphrase
from services.revocation.status import RevocationAuthority, SignerProvisioner
from shared import subjects
from shared.bus import rpc_call
from shared.db import Database
from shared.events import (
    CertIssued,
    CertReleased,
    CertRevoked,
    Event,
    UserOnboarded,
    UserUpdated,
)
from shared.pki import parse_serial
from shared.runtime import ServiceRuntime

SERVICE = "revocation"
QUERY_PAGE = 10_000


@dataclass
class RevocationService:
    runtime: ServiceRuntime
    public: PublicServer
    db: Database
    settings: RevocationSettings
    responder: Responder
    keyring: SignerKeyring
    provisioner: SignerProvisioner


class IssuerSigners:
    """The issuer certifies our OCSP signing keys (``rpc.issuer.ocsp.signer``)."""

    def __init__(self, broker: NatsBroker, timeout: float) -> None:
        self._broker = broker
        self._timeout = timeout

    async def certify(self, ca: str, csr_pem: str) -> tuple[str, list[str]]:
        result = await rpc_call(
            self._broker, "issuer", "ocsp.signer", {"ca": ca, "csr": csr_pem}, self._timeout
        )
        chain = result.get("chain_pem") or []
        if isinstance(chain, str):
            chain = [
                f"-----BEGIN CERTIFICATE-----{part}"
                for part in chain.split("-----BEGIN CERTIFICATE-----")[1:]
            ]
        return result["certificate_pem"], list(chain)


class RecentIds:
    """The ids of the last events this process produced, to tell its own echoes on the bus."""

    def __init__(self, size: int = 100_000) -> None:
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        self._size = size

    def add(self, event_id: str) -> None:
        if event_id in self._ids:
            return
        self._order.append(event_id)
        self._ids.add(event_id)
        if len(self._order) > self._size:
            self._ids.discard(self._order.popleft())

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids


def wire(settings: RevocationSettings | None = None) -> RevocationService:
    settings = settings or RevocationSettings()
    db = Database(settings.db_url(), schema=SERVICE)
    runtime = ServiceRuntime(SERVICE, settings, db=db, tables=TABLES)

    key_dir = settings.var_dir / SERVICE / "ocsp"
    keyring = SignerKeyring(
        key_dir,
        lambda: keyring_passphrase(key_dir, settings.ocsp_key_passphrase),
        IssuerSigners(runtime.broker, settings.rpc_timeout),
        timedelta(days=settings.ocsp_signer_renew_before_days),
    )
    reads = ReadView(settings.db_url(), db)
    responder = Responder(
        RevocationAuthority(reads, keyring),
        timedelta(seconds=settings.ocsp_validity_seconds),
        cache_for=timedelta(seconds=settings.ocsp_cache_seconds),
    )
    provisioner = SignerProvisioner(db, keyring)

    own = RecentIds()

    def status_changed(events: Sequence[Event]) -> None:
        """After a commit here: revocations are answered from memory at once."""
        for ev in events:
            own.add(ev.event_id)
            if isinstance(ev, CertRevoked):
                revoked = CertificateStatus(known=True, revoked_at=ev.revoked_at, reason=ev.reason)
                responder.learn(ev.issuer_ca, parse_serial(ev.serial), revoked)
        invalidate(events)

    def invalidate(events: Sequence[Event]) -> None:
        for ev in events:
            serial, ca = getattr(ev, "serial", None), getattr(ev, "issuer_ca", None)
            if serial and ca and not isinstance(ev, CertRevoked):
                responder.invalidate(ca, parse_serial(serial))

    def invalidate_everything(events: Sequence[Event]) -> None:
        """What other replicas did, heard on the bus: drop what this one remembers."""
        for ev in events:
            if ev.event_id in own:
                continue
            serial, ca = getattr(ev, "serial", None), getattr(ev, "issuer_ca", None)
            if serial and ca:
                responder.invalidate(ca, parse_serial(serial))

    def new_ca() -> None:
        responder.forget_issuers()
        provisioner.wake()

    async def resolve_query(query: str) -> list[str]:
        ids: list[str] = []
        while True:
            page = await rpc_call(
                runtime.broker,
                "inventory",
                "certs.list",
                {"query": query, "limit": QUERY_PAGE, "offset": len(ids)},
                settings.rpc_timeout,
            )
            items = page.get("items", [])
            ids.extend(item["id"] for item in items)
            if not items or len(ids) >= int(page.get("total", 0)):
                return ids

    crl_source = BucketCrlSource(settings.nats_url)
    handlers = Handlers(runtime, crl_source, status_changed, new_ca, resolve_query)

    def consume(subject: str, handler: Any, **options: Any) -> None:
        runtime.consume(subject, handler, ack_wait=settings.consumer_ack_wait_seconds, **options)

    consume(subjects.CERT_ISSUED, handlers.cert_issued)
    consume(subjects.CERT_INSTALLED, handlers.cert_installed)
    consume(subjects.CERT_REMOVED, handlers.cert_removed)
    consume(subjects.CERT_REVOCATION_REQUESTED, handlers.revocation_requested)
    consume(subjects.USER_ONBOARDED, handlers.user_onboarded, model=UserOnboarded)
    consume(subjects.USER_UPDATED, handlers.user_onboarded, model=UserUpdated)
    consume(subjects.DEVICE_ASSIGNED, handlers.device_assigned)
    consume(subjects.DEVICE_UNASSIGNED, handlers.device_unassigned)
    consume(subjects.DEVICE_DECOMMISSIONED, handlers.device_decommissioned)
    consume(subjects.USER_OFFBOARDED, handlers.user_offboarded)
    consume(subjects.CA_CREATED, handlers.ca_created)
    consume(subjects.CA_COMPROMISED, handlers.ca_compromised)
    consume(subjects.KEY_COMPROMISED, handlers.key_compromised)
    consume(subjects.CRL_PUBLISHED, handlers.crl_published, batch_size=10)
    _watch_status_changes(runtime.broker, invalidate_everything)

    RevocationApi(runtime, status_changed).register()

    public = PublicServer(
        make_public_app(reads, settings.crl_max_age_seconds, responder),
        settings.public_host,
        settings.public_port,
    )
    runtime.on_startup(public.start)
    runtime.on_startup(provisioner.start)
    # Shutdown hooks run in reverse: stop answering HTTP first, close the readers last.
    runtime.on_shutdown(reads.dispose)
    runtime.on_shutdown(crl_source.close)
    runtime.on_shutdown(provisioner.stop)
    runtime.on_shutdown(public.stop)
    return RevocationService(runtime, public, db, settings, responder, keyring, provisioner)


def _watch_status_changes(broker: NatsBroker, changed: Any) -> None:
    """Other replicas revoke too: every replica drops its cached OCSP answers when any does.
    These are plain core subscriptions, so every replica sees every message."""
    for subject, model in (
        (subjects.CERT_REVOKED, CertRevoked),
        (subjects.CERT_RELEASED, CertReleased),
        (subjects.CERT_ISSUED, CertIssued),
    ):

        def make(m: type[Event]) -> Any:
            async def _invalidate(body: dict[str, Any]) -> None:
                changed([m.model_validate(body)])

            return _invalidate

        # no_reply: these messages carry the publisher's JetStream ack inbox; answering it would
        # hand the publisher an empty "ack" before the stream's own.
        broker.subscriber(subject, title=f"revocation:ocsp-cache:{subject}", no_reply=True)(
            make(model)
        )


def build(settings: RevocationSettings | None = None) -> ServiceRuntime:
    return wire(settings).runtime
