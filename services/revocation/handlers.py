"""Events in, a domain call, events out: each batch is one transaction with its outbox events."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.serialization import Encoding

from services.revocation import crls, offboarding, projection
from services.revocation.models import KnownCa
from services.revocation.revoker import serialise_decisions
from shared.events import (
    CaCreated,
    CertInstalled,
    CertIssued,
    CertRemoved,
    CrlPublished,
    DeviceAssigned,
    DeviceUnassigned,
    UserOffboarded,
    UserOnboarded,
    UserUpdated,
)
from shared.pki import load_certificate

if TYPE_CHECKING:
    from shared.runtime import ServiceRuntime

log = logging.getLogger("certbus.revocation.handlers")


class Handlers:
    def __init__(self, runtime: ServiceRuntime, crl_source: crls.CrlSource) -> None:
        self._rt = runtime
        self._crl_source = crl_source

    async def cert_issued(self, events: list[CertIssued]) -> None:
        """Remember who a certificate belongs to; revoke it at once if its owner has left."""
        async with self._rt.unit_of_work() as uow:
            await serialise_decisions(uow.session)
            for ev in events:
                cert = await projection.record_issued(uow.session, ev)
                uow.emit(*(await offboarding.revoke_if_offboarded(uow.session, cert)).events)

    async def cert_installed(self, events: list[CertInstalled]) -> None:
        """Remember where a certificate is installed; revoke it if that is a leaver's device."""
        async with self._rt.unit_of_work() as uow:
            await serialise_decisions(uow.session)
            for ev in events:
                await projection.record_installed(uow.session, ev)
                cert = await projection.find_certificate(uow.session, ev.cert_id)
                if cert is not None:
                    uow.emit(*(await offboarding.revoke_if_offboarded(uow.session, cert)).events)

    async def cert_removed(self, events: list[CertRemoved]) -> None:
        """Forget an installation."""
        async with self._rt.unit_of_work() as uow:
            for ev in events:
                await projection.record_removed(uow.session, ev)

    async def user_onboarded(self, events: list[UserOnboarded]) -> None:
        """Remember the user's devices (user.onboarded, and user.updated when it lists them)."""
        async with self._rt.unit_of_work() as uow:
            await serialise_decisions(uow.session)
            for ev in events:
                if isinstance(ev, UserUpdated) and "devices" not in ev.model_fields_set:
                    continue
                await offboarding.rehire(uow.session, ev.user, ev.occurred_at)
                if isinstance(ev, UserUpdated):
                    changed = await projection.replace_devices(uow.session, ev.user, ev.devices)
                else:
                    changed = await projection.assign_devices(uow.session, ev.user, ev.devices)
                result = await offboarding.revoke_on_devices_of_offboarded(
                    uow.session, ev.user, changed
                )
                uow.emit(*result.events)

    async def device_assigned(self, events: list[DeviceAssigned]) -> None:
        """A device changes hands."""
        async with self._rt.unit_of_work() as uow:
            await serialise_decisions(uow.session)
            for ev in events:
                if ev.user:
                    changed = await projection.assign_devices(uow.session, ev.user, [ev.device])
                    result = await offboarding.revoke_on_devices_of_offboarded(
                        uow.session, ev.user, changed
                    )
                    uow.emit(*result.events)

    async def device_unassigned(self, events: list[DeviceUnassigned]) -> None:
        """A device no longer belongs to its user."""
        async with self._rt.unit_of_work() as uow:
            for ev in events:
                await projection.unassign_device(uow.session, ev.device, ev.user)

    async def user_offboarded(self, events: list[UserOffboarded]) -> None:
        """Revoke every certificate of a leaver (mode revoke), reason cessationOfOperation."""
        async with self._rt.unit_of_work() as uow:
            await serialise_decisions(uow.session)
            for ev in events:
                uow.emit(*(await offboarding.offboard(uow.session, ev)).events)

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

    async def crl_published(self, events: list[CrlPublished]) -> None:
        """Fetch the announced CRL from the bucket and serve it, if it is the newest."""
        fetched = [(ev, await self._crl_source.fetch(ev.object_name)) for ev in events]
        async with self._rt.unit_of_work() as uow:
            for ev, der in fetched:
                try:
                    await crls.accept(uow.session, ev, der)
                except crls.InvalidCrl as exc:
                    log.error("ignoring CRL %s #%s: %s", ev.ca, ev.crl_number, exc)
