"""Revoking certificates: one row per (CA, serial) and the ``cert.revoked`` event announcing it,
staged in the same transaction. Revoking twice is a no-op that reports the first revocation."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, text
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.revocation.models import KnownCertificate, ReleasedHold, Revocation
from services.revocation.timeutil import as_utc
from shared.clock import utcnow
from shared.events import CertReleased, CertRevoked, derived_id
from shared.pki import RevocationReason

DECISION_LOCK = 0x6365727462  # "certb": serialises revocation decisions on PostgreSQL


@dataclass(frozen=True)
class RevocationOrder:
    """What to revoke with, and what caused it (an event, or an API call)."""

    reason: RevocationReason
    comment: str
    cause: str
    correlation_id: str
    revoked_at: datetime | None = None
    invalidity_date: datetime | None = None
    actor: str = "system"
    causation_id: str | None = None


@dataclass
class Outcome:
    cert_id: str
    status: str  # revoked | already_revoked | failed
    serial: str | None = None
    issuer_ca: str | None = None
    revocation: dict[str, Any] | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class RevocationResult:
    outcomes: list[Outcome] = field(default_factory=list)
    events: list[CertRevoked] = field(default_factory=list)

    def extend(self, other: RevocationResult) -> None:
        self.outcomes.extend(other.outcomes)
        self.events.extend(other.events)


async def serialise_decisions(session: AsyncSession) -> None:
    """Make concurrent "revoke this user" and "here is a new certificate of theirs" transactions
    run one after the other, so neither misses the other. SQLite's BEGIN IMMEDIATE already does."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.exec(text(f"SELECT pg_advisory_xact_lock({DECISION_LOCK})"))  # type: ignore[call-overload]


@dataclass(frozen=True)
class RevocationRecord:
    """A revocation written in this transaction (inserted in bulk, not through the ORM)."""

    cert_id: str
    serial: str
    issuer_ca: str
    reason: int
    comment: str
    revoked_at: datetime
    invalidity_date: datetime | None
    correlation_id: str
    cause: str
    recorded_at: datetime


def describe(row: Revocation | RevocationRecord) -> dict[str, Any]:
    reason = RevocationReason(row.reason)
    return {
        "reason": reason.rfc_name,
        "reason_code": int(reason),
        "comment": row.comment,
        "revoked_at": as_utc(row.revoked_at).isoformat(),
        "invalidity_date": as_utc(row.invalidity_date).isoformat() if row.invalidity_date else None,
        "correlation_id": row.correlation_id,
        "cause": row.cause,
    }


async def existing_revocations(
    session: AsyncSession, certs: list[KnownCertificate]
) -> dict[str, Revocation | RevocationRecord]:
    found: dict[str, Revocation | RevocationRecord] = {}
    ids = sorted({c.cert_id for c in certs})
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = await session.exec(select(Revocation).where(Revocation.cert_id.in_(chunk)))  # type: ignore[attr-defined]
        found.update({r.cert_id: r for r in rows.all()})
    return found


async def revoke(
    session: AsyncSession,
    certs: list[KnownCertificate],
    order: RevocationOrder,
    existing: dict[str, Revocation | RevocationRecord] | None = None,
) -> RevocationResult:
    """Revoke every certificate of ``certs`` not revoked yet; the caller stages the events.

    A caller revoking for many orders in one transaction passes ``existing`` (from
    ``existing_revocations``), which is kept up to date here.
    """
    result = RevocationResult()
    if order.reason == RevocationReason.REMOVE_FROM_CRL:
        for cert in certs:
            result.outcomes.append(
                Outcome(
                    cert.cert_id,
                    "failed",
                    cert.serial,
                    cert.issuer_ca,
                    error="removeFromCRL is only used in delta CRLs; release a hold instead",
                )
            )
        return result
    if existing is None:
        existing = dict(await existing_revocations(session, certs))
    rows: list[RevocationRecord] = []
    now = utcnow()
    revoked_at = order.revoked_at or now
    seen: set[str] = set()
    for cert in certs:
        if cert.cert_id in seen:
            continue
        seen.add(cert.cert_id)
        prior = existing.get(cert.cert_id)
        if prior is not None:
            result.outcomes.append(
                Outcome(
                    cert.cert_id, "already_revoked", cert.serial, cert.issuer_ca, describe(prior)
                )
            )
            continue
        row = RevocationRecord(
            cert_id=cert.cert_id,
            serial=cert.serial,
            issuer_ca=cert.issuer_ca,
            reason=int(order.reason),
            comment=order.comment,
            revoked_at=revoked_at,
            invalidity_date=order.invalidity_date,
            correlation_id=order.correlation_id,
            cause=order.cause,
            recorded_at=now,
        )
        rows.append(row)
        existing[cert.cert_id] = row
        result.events.append(
            CertRevoked(
                event_id=derived_id("cert.revoked", cert.issuer_ca, cert.serial, order.cause),
                correlation_id=order.correlation_id,
                causation_id=order.causation_id,
                actor=order.actor,
                cert_id=cert.cert_id,
                serial=cert.serial,
                issuer_ca=cert.issuer_ca,
                reason=order.reason,
                comment=order.comment,
                revoked_at=revoked_at,
                invalidity_date=order.invalidity_date,
                owner=cert.owner,
            )
        )
        result.outcomes.append(
            Outcome(cert.cert_id, "revoked", cert.serial, cert.issuer_ca, describe(row))
        )
    if rows:
        connection = await session.connection()
        await connection.execute(insert(Revocation.__table__), [r.__dict__ for r in rows])  # type: ignore[attr-defined]
    return result


async def release(
    session: AsyncSession, cert: KnownCertificate, comment: str, correlation_id: str, actor: str
) -> tuple[dict[str, Any], CertReleased | None]:
    """Lift a certificateHold; every other reason is final."""
    row = (await session.exec(select(Revocation).where(Revocation.cert_id == cert.cert_id))).first()
    if row is None:
        return {"cert_id": cert.cert_id, "status": "not_revoked"}, None
    if row.reason != RevocationReason.CERTIFICATE_HOLD:
        return {"cert_id": cert.cert_id, "status": "final", "revocation": describe(row)}, None
    now = utcnow()
    session.add(
        ReleasedHold(
            cert_id=cert.cert_id,
            serial=cert.serial,
            issuer_ca=cert.issuer_ca,
            held_at=row.revoked_at,
            released_at=now,
            comment=comment,
            correlation_id=correlation_id,
        )
    )
    await session.delete(row)
    await session.flush()
    event = CertReleased(
        event_id=derived_id("cert.released", cert.issuer_ca, cert.serial, str(row.id)),
        correlation_id=correlation_id,
        actor=actor,
        cert_id=cert.cert_id,
        serial=cert.serial,
        issuer_ca=cert.issuer_ca,
        comment=comment,
    )
    return {"cert_id": cert.cert_id, "status": "released", "released_at": now.isoformat()}, event
