"""Events and calls in, metadata values out; every change announced by ``cert.metadata.changed``."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field, model_validator

from services.metadata.values import IS_ENABLED, Change, MetadataValues, UnknownCertificate
from shared.bus import RpcError
from shared.clock import Clock
from shared.events import (
    CertIssued,
    CertMetadataChanged,
    Event,
    OffboardingMode,
    UserOffboarded,
    derived_id,
    new_id,
)
from shared.runtime import ServiceRuntime, UnitOfWork

log = logging.getLogger("certbus.metadata")


class GetRequest(BaseModel):
    cert_id: str = Field(min_length=1)


class SetRequest(BaseModel):
    cert_id: str = Field(min_length=1)
    field: str = Field(min_length=1, max_length=200)
    value: str | int | bool | None
    actor: str = "api"
    correlation_id: str | None = None


class CompareRequest(BaseModel):
    cert_id: str | None = None
    thumbprint: str | None = None
    expected: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_a_certificate(self) -> CompareRequest:
        if not (self.cert_id or self.thumbprint):
            raise ValueError("give cert_id or thumbprint")
        return self


def _text(value: str | int | bool | None) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if value is None else str(value)


class MetadataHandlers:
    def __init__(self, runtime: ServiceRuntime, clock: Clock) -> None:
        self._rt = runtime
        self._clock = clock

    def _values(self, uow: UnitOfWork) -> MetadataValues:
        return MetadataValues(uow.session, self._clock.now())

    @staticmethod
    def _announce(
        uow: UnitOfWork,
        change: Change,
        cause: Event | None,
        event_id: str,
        correlation_id: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "event_id": event_id,
            "cert_id": change.cert_id,
            "field": change.field,
            "old": change.old,
            "new": change.new,
            "actor": change.actor,
        }
        if cause is not None:
            uow.emit(cause.caused(CertMetadataChanged, **fields))
        else:
            uow.emit(CertMetadataChanged(correlation_id=correlation_id or "", **fields))

    async def cert_issued(self, events: list[CertIssued]) -> None:
        """Remember each new certificate (id, thumbprints, owner) and its enrollment metadata."""
        async with self._rt.unit_of_work() as uow:
            values = self._values(uow)
            for ev in events:
                fresh = await values.remember_certificate(
                    cert_id=ev.cert_id,
                    serial=ev.serial,
                    thumbprint_sha1=ev.thumbprint_sha1,
                    thumbprint_sha256=ev.thumbprint_sha256,
                    owner=ev.owner,
                    event_id=ev.event_id,
                )
                if not fresh:
                    continue
                for name, value in ev.metadata.items():
                    await values.set(
                        ev.cert_id, name, value, ev.actor, ev.event_id, ev.correlation_id
                    )
                if await values.owner_is_disabled(ev.owner):
                    change = await values.set(
                        ev.cert_id, IS_ENABLED, "false", "metadata", ev.event_id, ev.correlation_id
                    )
                    if change:
                        self._announce(uow, change, ev, derived_id("metadata.disable", ev.event_id))

    async def user_offboarded(self, events: list[UserOffboarded]) -> None:
        """In disable mode, set isEnabled=false on the user's certificates, and on later ones."""
        async with self._rt.unit_of_work() as uow:
            values = self._values(uow)
            for ev in events:
                if ev.mode != OffboardingMode.DISABLE:
                    continue
                await values.disable_owner(ev.user, ev.event_id)
                for cert_id in await values.certificates_of(ev.user):
                    change = await values.set(
                        cert_id, IS_ENABLED, "false", ev.actor, ev.event_id, ev.correlation_id
                    )
                    if change:
                        event_id = derived_id("metadata.disable", ev.event_id, cert_id)
                        self._announce(uow, change, ev, event_id)
                log.info("offboarding %s (disable): certificates disabled", ev.user)

    async def get(self, request: dict[str, Any]) -> dict[str, Any]:
        """The metadata of one certificate (by id, thumbprint or serial)."""
        req = GetRequest.model_validate(request)
        async with self._rt.unit_of_work() as uow:
            values = self._values(uow)
            cert_id = await self._resolve(values, req.cert_id)
            return {"cert_id": cert_id, "fields": await values.fields(cert_id)}

    async def set(self, request: dict[str, Any]) -> dict[str, Any]:
        """Set one field; announces cert.metadata.changed in the same transaction."""
        req = SetRequest.model_validate(request)
        async with self._rt.unit_of_work() as uow:
            values = self._values(uow)
            cert_id = await self._resolve(values, req.cert_id)
            event_id = new_id()
            change = await values.set(
                cert_id, req.field, _text(req.value), req.actor, event_id, req.correlation_id
            )
            if change:
                self._announce(uow, change, None, event_id, req.correlation_id)
            return {
                "cert_id": cert_id,
                "changed": change is not None,
                "fields": await values.fields(cert_id),
            }

    async def compare(self, request: dict[str, Any]) -> dict[str, Any]:
        """The access valve's question: do this certificate's values match what is expected?"""
        req = CompareRequest.model_validate(request)
        async with self._rt.unit_of_work() as uow:
            values = self._values(uow)
            cert_id = await self._resolve(values, req.cert_id, req.thumbprint)
            return await values.compare(cert_id, req.expected)

    async def history(self, request: dict[str, Any]) -> dict[str, Any]:
        """Every change of one certificate's metadata, oldest first."""
        req = GetRequest.model_validate(request)
        async with self._rt.unit_of_work() as uow:
            values = self._values(uow)
            cert_id = await self._resolve(values, req.cert_id)
            return {"cert_id": cert_id, "items": await values.history(cert_id)}

    @staticmethod
    async def _resolve(
        values: MetadataValues, cert_id: str | None, thumbprint: str | None = None
    ) -> str:
        try:
            return await values.resolve(cert_id, thumbprint)
        except UnknownCertificate as exc:
            raise RpcError("not_found", f"no certificate {exc.args[0]!r}", 404) from exc
