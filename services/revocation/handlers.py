"""Events in, a domain call, events out: each batch is one transaction with its outbox events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.serialization import Encoding

from services.revocation import crls, fanout, offboarding, projection
from services.revocation.models import KnownCa
from services.revocation.revoker import (
    RevocationOrder,
    RevocationResult,
    revoke,
    serialise_decisions,
)
from shared.events import (
    CaCompromised,
    CaCreated,
    CertInstalled,
    CertIssued,
    CertRemoved,
    CertRevocationRequested,
    CrlPublished,
    DeviceAssigned,
    DeviceDecommissioned,
    DeviceUnassigned,
    Event,
    KeyCompromised,
    UserOffboarded,
    UserOnboarded,
    UserUpdated,
)
from shared.pki import load_certificate

if TYPE_CHECKING:
    from shared.runtime import ServiceRuntime, UnitOfWork

log = logging.getLogger("certbus.revocation.handlers")


class _Decisions:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.session = uow.session
        self.events: list[Event] = []

    def emit(self, result: RevocationResult) -> None:
        self.uow.emit(*result.events)
        self.events.extend(result.events)


class Handlers:
    def __init__(
        self,
        runtime: ServiceRuntime,
        crl_source: crls.CrlSource,
        on_change: Callable[[Sequence[Event]], None] = lambda _events: None,
        on_new_ca: Callable[[], None] = lambda: None,
        resolve_query: Callable[[str], Any] | None = None,
    ) -> None:
        self._rt = runtime
        self._crl_source = crl_source
        self._on_change = on_change
        self._on_new_ca = on_new_ca
        self._resolve_query = resolve_query

    @asynccontextmanager
    async def _deciding(self) -> AsyncIterator[_Decisions]:
        """One transaction that may revoke; caches learn about it once it has committed."""
        async with self._rt.unit_of_work() as uow:
            await serialise_decisions(uow.session)
            decisions = _Decisions(uow)
            yield decisions
        self._on_change(decisions.events)

    async def cert_issued(self, events: list[CertIssued]) -> None:
        """Remember who a certificate belongs to; revoke it at once if its owner has left or its
        key or CA is compromised."""
        async with self._deciding() as d:
            certs = await projection.record_issued_many(d.session, events)
            compromised = await fanout.possibly_compromised(d.session, certs)
            for cert in compromised:
                d.emit(await fanout.revoke_if_compromised(d.session, cert))
            rest = [c for c in certs if c not in compromised]
            for cert in await offboarding.possibly_offboarded(d.session, rest):
                d.emit(await offboarding.revoke_if_offboarded(d.session, cert))
        self._on_change(events)

    async def cert_installed(self, events: list[CertInstalled]) -> None:
        """Remember where a certificate is installed; revoke it if that is a leaver's device."""
        async with self._deciding() as d:
            for ev in events:
                await projection.record_installed(d.session, ev)
                cert = await projection.find_certificate(d.session, ev.cert_id)
                if cert is not None:
                    d.emit(await offboarding.revoke_if_offboarded(d.session, cert))

    async def cert_removed(self, events: list[CertRemoved]) -> None:
        """Forget an installation."""
        async with self._rt.unit_of_work() as uow:
            for ev in events:
                await projection.record_removed(uow.session, ev)

    async def user_onboarded(self, events: list[UserOnboarded]) -> None:
        """Remember the user's devices (user.onboarded, and user.updated when it lists them)."""
        async with self._deciding() as d:
            for ev in events:
                if isinstance(ev, UserUpdated) and "devices" not in ev.model_fields_set:
                    continue
                await offboarding.rehire(d.session, ev.user, ev.occurred_at)
                if isinstance(ev, UserUpdated):
                    changed = await projection.replace_devices(d.session, ev.user, ev.devices)
                else:
                    changed = await projection.assign_devices(d.session, ev.user, ev.devices)
                d.emit(
                    await offboarding.revoke_on_devices_of_offboarded(d.session, ev.user, changed)
                )

    async def device_assigned(self, events: list[DeviceAssigned]) -> None:
        """A device changes hands."""
        async with self._deciding() as d:
            for ev in events:
                if ev.user:
                    changed = await projection.assign_devices(d.session, ev.user, [ev.device])
                    d.emit(
                        await offboarding.revoke_on_devices_of_offboarded(
                            d.session, ev.user, changed
                        )
                    )

    async def device_unassigned(self, events: list[DeviceUnassigned]) -> None:
        """A device no longer belongs to its user."""
        async with self._rt.unit_of_work() as uow:
            for ev in events:
                await projection.unassign_device(uow.session, ev.device, ev.user)

    async def user_offboarded(self, events: list[UserOffboarded]) -> None:
        """Revoke every certificate of a leaver (mode revoke), reason cessationOfOperation."""
        async with self._deciding() as d:
            d.emit(await offboarding.offboard_many(d.session, events))

    async def device_decommissioned(self, events: list[DeviceDecommissioned]) -> None:
        """Revoke everything installed on (or issued for) a decommissioned device."""
        async with self._deciding() as d:
            for ev in events:
                d.emit(await fanout.device_decommissioned(d.session, ev))

    async def ca_compromised(self, events: list[CaCompromised]) -> None:
        """Revoke everything the CA issued, reason cACompromise."""
        async with self._deciding() as d:
            for ev in events:
                d.emit(await fanout.ca_compromised(d.session, ev))

    async def key_compromised(self, events: list[KeyCompromised]) -> None:
        """Revoke every certificate for the public key, reason keyCompromise."""
        async with self._deciding() as d:
            for ev in events:
                d.emit(await fanout.key_compromised(d.session, ev))

    async def revocation_requested(self, events: list[CertRevocationRequested]) -> None:
        """Revoke the certificates named (ids, serials, or an inventory query)."""
        targets: list[tuple[CertRevocationRequested, list[str]]] = []
        for ev in events:
            idents = [*ev.cert_ids, *ev.serials]
            if ev.query and self._resolve_query is not None:
                idents.extend(await self._resolve_query(ev.query))
            targets.append((ev, idents))
        async with self._deciding() as d:
            for ev, idents in targets:
                certs = []
                for ident in idents:
                    cert = await projection.find_certificate(d.session, ident)
                    if cert is None:
                        log.warning("revocation requested for unknown certificate %s", ident)
                    else:
                        certs.append(cert)
                order = RevocationOrder(
                    reason=ev.reason,
                    comment=ev.comment,
                    cause=ev.event_id,
                    correlation_id=ev.correlation_id,
                    revoked_at=ev.effective_at,
                    invalidity_date=ev.invalidity_date,
                    actor=ev.actor,
                    causation_id=ev.event_id,
                )
                d.emit(await revoke(d.session, certs, order))

    async def ca_created(self, events: list[CaCreated]) -> None:
        """Keep the CA certificate, for the AIA URL and to match OCSP requests."""
        async with self._rt.unit_of_work() as uow:
            for ev in events:
                der = load_certificate(ev.certificate_pem).public_bytes(Encoding.DER)
                row = await uow.session.get(KnownCa, ev.ca)
                if row is None:
                    row = KnownCa(ca=ev.ca, subject_dn=ev.subject_dn, key_type=ev.key_type, der=der)
                row.der, row.subject_dn, row.key_type = der, ev.subject_dn, ev.key_type
                uow.session.add(row)
        self._on_new_ca()

    async def crl_published(self, events: list[CrlPublished]) -> None:
        """Fetch the announced CRL from the bucket and serve it, if it is the newest."""
        fetched = [(ev, await self._crl_source.fetch(ev.object_name)) for ev in events]
        async with self._rt.unit_of_work() as uow:
            for ev, der in fetched:
                try:
                    await crls.accept(uow.session, ev, der)
                except crls.InvalidCrl as exc:
                    log.error("ignoring CRL %s #%s: %s", ev.ca, ev.crl_number, exc)
