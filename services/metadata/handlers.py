"""Events and calls in, metadata values out; every change announced by ``cert.metadata.changed``."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

from pydantic import BaseModel, Field, model_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from services.metadata.definitions import (
    Definitions,
    FieldDefinition,
    FieldType,
    InvalidValue,
    canonical,
)
from services.metadata.values import (
    IS_ENABLED,
    Change,
    IssuedValues,
    MetadataValues,
    UnknownCertificate,
)
from shared.bus import RpcError
from shared.clock import Clock
from shared.events import (
    CertIssued,
    CertMetadataChanged,
    Event,
    OffboardingMode,
    UserOffboarded,
    UserOnboarded,
    derived_id,
    new_id,
)
from shared.runtime import ServiceRuntime, UnitOfWork

log = logging.getLogger("certbus.metadata")

Scalar = str | int | bool | None


class GetRequest(BaseModel):
    cert_id: str = Field(min_length=1)


class SetRequest(BaseModel):
    cert_id: str = Field(min_length=1)
    field: str | None = Field(None, min_length=1, max_length=200)
    value: Scalar = None
    fields: dict[str, Scalar] = Field(default_factory=dict)
    actor: str = "api"
    correlation_id: str | None = None

    def changes(self) -> dict[str, Scalar]:
        return {**self.fields, **({self.field: self.value} if self.field else {})}

    @model_validator(mode="after")
    def _sets_something(self) -> SetRequest:
        if not self.changes():
            raise ValueError("give field and value, or fields")
        return self


class CompareRequest(BaseModel):
    cert_id: str | None = None
    thumbprint: str | None = None
    expected: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_a_certificate(self) -> CompareRequest:
        if not (self.cert_id or self.thumbprint):
            raise ValueError("give cert_id or thumbprint")
        return self


class DefineRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    type: FieldType = FieldType.STRING
    required: bool = False
    default: Scalar = None
    description: str = ""


class MetadataHandlers:
    def __init__(self, runtime: ServiceRuntime, clock: Clock, *, strict: bool = False) -> None:
        self._rt = runtime
        self._clock = clock
        self._strict = strict

    def _reading(self) -> AbstractAsyncContextManager[AsyncSession]:
        assert self._rt.db is not None
        return self._rt.db.reading()

    def _values(self, uow: UnitOfWork) -> MetadataValues:
        return MetadataValues(uow.session, self._clock.now())

    @staticmethod
    async def _definitions(uow: UnitOfWork) -> dict[str, FieldDefinition]:
        return {d.name: d for d in await Definitions(uow.session).all()}

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

    async def start(self) -> None:
        try:
            async with self._rt.unit_of_work() as uow:
                await Definitions(uow.session).ensure_built_in()
        except IntegrityError:
            log.info("built-in field definitions were created by another replica")

    async def cert_issued(self, events: list[CertIssued]) -> None:
        """Remember each new certificate (id, thumbprints, owner) and its enrollment metadata."""
        async with self._rt.unit_of_work() as uow:
            values = self._values(uow)
            definitions = await self._definitions(uow)
            fresh = await values.unknown([ev.cert_id for ev in events])
            issued = {ev.cert_id: ev for ev in events if ev.cert_id in fresh}
            await values.add_issued(
                [
                    IssuedValues(
                        cert_id=ev.cert_id,
                        serial=ev.serial,
                        thumbprint_sha1=ev.thumbprint_sha1,
                        thumbprint_sha256=ev.thumbprint_sha256,
                        owner=ev.owner,
                        event_id=ev.event_id,
                        fields=_enrollment_values(ev, definitions),
                        actor=ev.actor,
                        correlation_id=ev.correlation_id,
                    )
                    for ev in issued.values()
                ]
            )
            disabled = await values.disabled_among({ev.owner for ev in issued.values() if ev.owner})
            for ev in issued.values():
                if ev.owner not in disabled:
                    continue
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
                disabled = 0
                for cert_id in await values.certificates_of(ev.user):
                    change = await values.set(
                        cert_id, IS_ENABLED, "false", ev.actor, ev.event_id, ev.correlation_id
                    )
                    if change:
                        disabled += 1
                        self._announce(
                            uow, change, ev, derived_id("metadata.disable", ev.event_id, cert_id)
                        )
                log.info("offboarding %s (disable): %d certificates disabled", ev.user, disabled)

    async def user_onboarded(self, events: list[UserOnboarded]) -> None:
        """A user hired again after a disable-mode offboarding: what is issued to them from now
        on starts enabled (their old certificates stay as they are)."""
        async with self._rt.unit_of_work() as uow:
            values = self._values(uow)
            for ev in events:
                if await values.enable_owner(ev.user, ev.occurred_at):
                    log.info("%s onboarded again: new certificates start enabled", ev.user)

    async def get(self, request: dict[str, Any]) -> dict[str, Any]:
        """The metadata of one certificate (by id, thumbprint or serial)."""
        req = GetRequest.model_validate(request)
        async with self._reading() as session:
            values = MetadataValues(session, self._clock.now())
            cert_id = await _resolve(values, req.cert_id)
            return {"cert_id": cert_id, "fields": await values.fields(cert_id)}

    async def set(self, request: dict[str, Any]) -> dict[str, Any]:
        """Set one field (field, value) or several (fields); each change is announced."""
        req = SetRequest.model_validate(request)
        async with self._rt.unit_of_work() as uow:
            values = self._values(uow)
            definitions = await self._definitions(uow)
            cert_id = await _resolve(values, req.cert_id)
            wanted = {
                name: self._valid(definitions, name, value) for name, value in req.changes().items()
            }
            changed = []
            for name, value in wanted.items():
                event_id = new_id()
                change = await values.set(
                    cert_id, name, value, req.actor, event_id, req.correlation_id
                )
                if change:
                    changed.append(name)
                    self._announce(uow, change, None, event_id, req.correlation_id)
            return {
                "cert_id": cert_id,
                "changed": bool(changed),
                "changed_fields": changed,
                "fields": await values.fields(cert_id),
            }

    def _valid(
        self, definitions: dict[str, FieldDefinition], name: str, value: Scalar
    ) -> str | None:
        definition = definitions.get(name)
        if definition is None:
            if self._strict:
                raise RpcError("unknown_field", f"no metadata field {name!r} is defined", 422)
            return canonical(FieldType.STRING, value) if value is not None else None
        try:
            return definition.normalise(value)
        except InvalidValue as exc:
            raise RpcError("invalid_value", str(exc), 422) from exc

    async def compare(self, request: dict[str, Any]) -> dict[str, Any]:
        """The access valve's question: do this certificate's values match what is expected?"""
        req = CompareRequest.model_validate(request)
        async with self._reading() as session:
            values = MetadataValues(session, self._clock.now())
            cert_id = await _resolve(values, req.cert_id, req.thumbprint)
            definitions = await Definitions(session).named(list(req.expected))
            expected = {
                name: _expected(definitions.get(name), v) for name, v in req.expected.items()
            }
            return await values.compare(cert_id, expected)

    async def history(self, request: dict[str, Any]) -> dict[str, Any]:
        """Every change of one certificate's metadata, oldest first."""
        req = GetRequest.model_validate(request)
        async with self._reading() as session:
            values = MetadataValues(session, self._clock.now())
            cert_id = await _resolve(values, req.cert_id)
            return {"cert_id": cert_id, "items": await values.history(cert_id)}

    async def fields_list(self, _request: dict[str, Any]) -> dict[str, Any]:
        """The defined metadata fields: name, type, required, default."""
        async with self._reading() as session:
            return {"items": [d.describe() for d in await Definitions(session).all()]}

    async def fields_define(self, request: dict[str, Any]) -> dict[str, Any]:
        """Define or redefine a field; its default applies to certificates issued from now on."""
        req = DefineRequest.model_validate(request)
        try:
            default = None if req.default is None else canonical(req.type, req.default, "default")
        except InvalidValue as exc:
            raise RpcError("invalid_value", str(exc), 422) from exc
        definition = FieldDefinition(req.name, req.type, req.required, default, req.description)
        async with self._rt.unit_of_work() as uow:
            await Definitions(uow.session).define(definition)
        return definition.describe()


def _enrollment_values(
    ev: CertIssued, definitions: dict[str, FieldDefinition]
) -> dict[str, str | None]:
    """What enrollment gave, canonical where a definition says how, plus the defaults."""
    out: dict[str, str | None] = {}
    for name, value in ev.metadata.items():
        definition = definitions.get(name)
        try:
            out[name] = definition.normalise(value) if definition else value
        except InvalidValue as exc:
            log.warning("certificate %s: enrollment metadata dropped: %s", ev.cert_id, exc)
    for definition in definitions.values():
        if definition.name in out:
            continue
        if definition.default is not None:
            out[definition.name] = definition.default
        elif definition.required:
            log.warning(
                "certificate %s was issued without required field %s", ev.cert_id, definition.name
            )
    return out


def _expected(definition: FieldDefinition | None, value: Any) -> Any:
    if definition is None or value is None:
        return value
    try:
        return definition.normalise(value)
    except InvalidValue:
        return value


async def _resolve(
    values: MetadataValues, cert_id: str | None, thumbprint: str | None = None
) -> str:
    try:
        return await values.resolve(cert_id, thumbprint)
    except UnknownCertificate as exc:
        raise RpcError("not_found", f"no certificate {exc.args[0]!r}", 404) from exc
