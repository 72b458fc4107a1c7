"""The revocation service's RPC operations: revoke one, revoke many, release a hold, status."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.revocation import projection, revoker
from services.revocation.models import KnownCertificate, Revocation
from shared.bus import RpcError
from shared.clock import utcnow
from shared.events import Event, new_id
from shared.pki import RevocationReason
from shared.runtime import ServiceRuntime

BULK_CHUNK = 1000
FUTURE_SKEW = timedelta(minutes=5)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")
    actor: str = "api"
    correlation_id: str | None = None
    request_id: str | None = None


class _Revoking(_Request):
    reason: RevocationReason = RevocationReason.UNSPECIFIED
    comment: str = Field(min_length=1, max_length=4000)
    effective_at: datetime | None = None
    invalidity_date: datetime | None = None

    @field_validator("reason", mode="before")
    @classmethod
    def _parse_reason(cls, value: Any) -> RevocationReason:
        try:
            return RevocationReason.parse(value)
        except ValueError as exc:
            raise ValueError(
                f"{exc}; use 0-10 or one of {[r.rfc_name for r in RevocationReason]}"
            ) from exc

    @field_validator("effective_at", "invalidity_date")
    @classmethod
    def _not_in_the_future(cls, value: datetime | None) -> datetime | None:
        # A revocation takes effect when it is processed or earlier (backdated); a date ahead
        # would publish a CRL entry that claims a revocation has not happened yet.
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value > utcnow() + FUTURE_SKEW:
            raise ValueError("may not be in the future: scheduled revocation is not supported")
        return value

    @field_validator("comment")
    @classmethod
    def _comment_says_something(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a comment is required")
        return value.strip()


class RevokeRequest(_Revoking):
    id: str | None = None
    cert_id: str | None = None
    serial: str | None = None
    thumbprint: str | None = None

    @model_validator(mode="after")
    def _names_a_certificate(self) -> RevokeRequest:
        if not self.ident:
            raise ValueError("name the certificate: cert_id, serial, thumbprint or id")
        return self

    @property
    def ident(self) -> str | None:
        return self.id or self.cert_id or self.serial or self.thumbprint


class BulkRevokeRequest(_Revoking):
    cert_ids: list[str] = Field(min_length=1, max_length=1_000_000)
    dry_run: bool = False


class ReleaseRequest(_Request):
    id: str = Field(min_length=1)
    comment: str = "hold released"


class StatusRequest(BaseModel):
    id: str = Field(min_length=1)


def _order(req: _Revoking) -> revoker.RevocationOrder:
    cause = req.request_id or new_id()
    return revoker.RevocationOrder(
        reason=req.reason,
        comment=req.comment,
        cause=f"api:{cause}",
        correlation_id=req.correlation_id or cause,
        revoked_at=req.effective_at,
        invalidity_date=req.invalidity_date,
        actor=req.actor,
    )


def _counts(items: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
    return counts


class RevocationApi:
    def __init__(
        self, runtime: ServiceRuntime, on_change: Callable[[Sequence[Event]], None]
    ) -> None:
        self._rt = runtime
        self._on_change = on_change

    def register(self) -> None:
        self._rt.rpc("revoke", self.revoke)
        self._rt.rpc("revoke.bulk", self.revoke_bulk)
        self._rt.rpc("release", self.release)
        self._rt.rpc("status", self.status)

    async def revoke(self, request: dict[str, Any]) -> dict[str, Any]:
        """Revoke one certificate (by id, serial or thumbprint) with an RFC 5280 reason."""
        req = RevokeRequest.model_validate(request)
        async with self._rt.unit_of_work() as uow:
            cert = await projection.find_certificate(uow.session, req.ident or "")
            if cert is None:
                raise RpcError("not_found", f"no certificate {req.ident!r} is known", 404)
            result = await revoker.revoke(uow.session, [cert], _order(req))
            self._fail_on_refusal(result)
            uow.emit(*result.events)
        self._on_change(result.events)
        return result.outcomes[0].as_dict()

    @staticmethod
    def _fail_on_refusal(result: revoker.RevocationResult) -> None:
        for outcome in result.outcomes:
            if outcome.status == "failed":
                raise RpcError("invalid_reason", outcome.error or "cannot revoke", 422)

    async def revoke_bulk(self, request: dict[str, Any]) -> dict[str, Any]:
        """Revoke many certificates at once; ``dry_run`` reports what would be revoked."""
        req = BulkRevokeRequest.model_validate(request)
        order = _order(req)
        items: list[dict[str, Any]] = []
        ids = list(dict.fromkeys(req.cert_ids))
        for start in range(0, len(ids), BULK_CHUNK):
            chunk = ids[start : start + BULK_CHUNK]
            items.extend(await self._bulk_chunk(chunk, order, req.dry_run))
        return {"dry_run": req.dry_run, "items": items, "counts": _counts(items)}

    async def _bulk_chunk(
        self, ids: list[str], order: revoker.RevocationOrder, dry_run: bool
    ) -> list[dict[str, Any]]:
        async with self._rt.unit_of_work() as uow:
            found: dict[str, KnownCertificate] = {}
            missing: list[str] = []
            for ident in ids:
                cert = await projection.find_certificate(uow.session, ident)
                if cert is None:
                    missing.append(ident)
                else:
                    found[ident] = cert
            if dry_run:
                prior = await revoker.existing_revocations(uow.session, list(found.values()))
                items = [
                    _preview(ident, cert, prior.get(cert.cert_id)) for ident, cert in found.items()
                ]
            else:
                result = await revoker.revoke(uow.session, list(found.values()), order)
                uow.emit(*result.events)
                items = [o.as_dict() for o in result.outcomes]
        if not dry_run:
            self._on_change(result.events)
        return items + [
            {"cert_id": ident, "status": "failed", "error": "not_found"} for ident in missing
        ]

    async def release(self, request: dict[str, Any]) -> dict[str, Any]:
        """Lift a certificateHold: the certificate is good again and leaves the CRL."""
        req = ReleaseRequest.model_validate(request)
        async with self._rt.unit_of_work() as uow:
            cert = await projection.find_certificate(uow.session, req.id)
            if cert is None:
                raise RpcError("not_found", f"no certificate {req.id!r} is known", 404)
            outcome, event = await revoker.release(
                uow.session, cert, req.comment, req.correlation_id or new_id(), req.actor
            )
            if outcome["status"] == "final":
                reason = outcome["revocation"]["reason"]
                raise RpcError(
                    "revocation_final", f"revoked as {reason}: only a hold can be lifted", 409
                )
            if event is not None:
                uow.emit(event)
        if event is not None:
            self._on_change([event])
        return outcome

    async def status(self, request: dict[str, Any]) -> dict[str, Any]:
        """Whether a certificate is good or revoked, and how."""
        req = StatusRequest.model_validate(request)
        async with self._rt.db.session() as session:  # type: ignore[union-attr]
            cert = await projection.find_certificate(session, req.id)
            if cert is None:
                raise RpcError("not_found", f"no certificate {req.id!r} is known", 404)
            prior = await revoker.existing_revocations(session, [cert])
        row = prior.get(cert.cert_id)
        return {
            "cert_id": cert.cert_id,
            "serial": cert.serial,
            "issuer_ca": cert.issuer_ca,
            "owner": cert.owner,
            "status": "revoked" if row else "good",
            "revocation": revoker.describe(row) if row else None,
        }


def _preview(
    ident: str, cert: KnownCertificate, prior: Revocation | revoker.RevocationRecord | None
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "cert_id": cert.cert_id,
        "serial": cert.serial,
        "issuer_ca": cert.issuer_ca,
        "owner": cert.owner,
    }
    if prior is not None:
        item.update(status="already_revoked", revocation=revoker.describe(prior))
    else:
        item["status"] = "would_revoke"
    return item
