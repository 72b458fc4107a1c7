"""Per-certificate metadata values and their history, on one database session.

Values are strings on the bus (``CertIssued.metadata``, ``CertMetadataChanged.old/new``);
this module records them, knows which certificates exist (from ``cert.issued``) and compares
what a relying party expects with what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.metadata.tables import DisabledOwner, FieldValue, HistoryEntry, KnownCertificate
from shared.db import table_of

IS_ENABLED = "isEnabled"


class UnknownCertificate(LookupError):
    pass


@dataclass(frozen=True)
class Change:
    cert_id: str
    field: str
    old: str | None
    new: str | None
    actor: str


def normalise_thumbprint(text: str) -> str:
    return text.replace(":", "").replace(" ", "").strip().lower()


@dataclass(frozen=True)
class IssuedValues:
    cert_id: str
    serial: str
    thumbprint_sha1: str
    thumbprint_sha256: str
    owner: str | None
    event_id: str
    fields: dict[str, str | None]
    actor: str
    correlation_id: str | None


class MetadataValues:
    """The values of every certificate, read and changed inside the caller's transaction."""

    def __init__(self, session: AsyncSession, now: datetime) -> None:
        self._s = session
        self._now = now

    async def remember_certificate(
        self,
        *,
        cert_id: str,
        serial: str,
        thumbprint_sha1: str,
        thumbprint_sha256: str,
        owner: str | None,
        event_id: str,
    ) -> bool:
        """Record a newly issued certificate; False if it was already known."""
        if await self._s.get(KnownCertificate, cert_id):
            return False
        self._s.add(
            KnownCertificate(
                cert_id=cert_id,
                serial=serial.lower(),
                thumbprint_sha1=normalise_thumbprint(thumbprint_sha1),
                thumbprint_sha256=normalise_thumbprint(thumbprint_sha256),
                owner=owner,
                issued_event_id=event_id,
            )
        )
        await self._s.flush()
        return True

    async def unknown(self, cert_ids: list[str]) -> set[str]:
        """Which of these certificates metadata has not seen yet."""
        query = select(KnownCertificate.cert_id).where(col(KnownCertificate.cert_id).in_(cert_ids))
        return set(cert_ids) - set((await self._s.exec(query)).all())

    async def add_issued(self, certificates: list[IssuedValues]) -> None:
        """Record certificates ``unknown`` named, with their first values, in three statements."""
        if not certificates:
            return
        certs, values, history = [], [], []
        for c in certificates:
            certs.append(
                {
                    "cert_id": c.cert_id,
                    "serial": c.serial.lower(),
                    "thumbprint_sha1": normalise_thumbprint(c.thumbprint_sha1),
                    "thumbprint_sha256": normalise_thumbprint(c.thumbprint_sha256),
                    "owner": c.owner,
                    "issued_event_id": c.event_id,
                }
            )
            for field, value in c.fields.items():
                values.append(
                    {
                        "cert_id": c.cert_id,
                        "field": field,
                        "value": value,
                        "updated_at": self._now,
                        "actor": c.actor,
                    }
                )
                history.append(
                    {
                        "cert_id": c.cert_id,
                        "field": field,
                        "old": None,
                        "new": value,
                        "actor": c.actor,
                        "changed_at": self._now,
                        "event_id": c.event_id,
                        "correlation_id": c.correlation_id,
                    }
                )
        connection = await self._s.connection()
        for table, rows in (
            (KnownCertificate, certs),
            (FieldValue, values),
            (HistoryEntry, history),
        ):
            if rows:
                await connection.execute(insert(table_of(table)), rows)

    async def disabled_among(self, owners: set[str]) -> set[str]:
        if not owners:
            return set()
        query = select(DisabledOwner.owner).where(col(DisabledOwner.owner).in_(owners))
        return set((await self._s.exec(query)).all())

    async def resolve(self, cert_id: str | None = None, thumbprint: str | None = None) -> str:
        """The cert id of a certificate named by id, SHA-1 / SHA-256 thumbprint or serial."""
        if cert_id:
            if await self._s.get(KnownCertificate, cert_id):
                return cert_id
            thumbprint = thumbprint or cert_id
        if thumbprint:
            key = normalise_thumbprint(thumbprint)
            row = (
                await self._s.exec(
                    select(KnownCertificate).where(
                        or_(
                            KnownCertificate.thumbprint_sha1 == key,
                            KnownCertificate.thumbprint_sha256 == key,
                            KnownCertificate.serial == key,
                        )
                    )
                )
            ).first()
            if row:
                return row.cert_id
        raise UnknownCertificate(cert_id or thumbprint or "")

    async def fields(self, cert_id: str) -> dict[str, str | None]:
        rows = (
            await self._s.exec(
                select(FieldValue)
                .where(FieldValue.cert_id == cert_id)
                .order_by(col(FieldValue.field))
            )
        ).all()
        return {r.field: r.value for r in rows}

    async def set(
        self,
        cert_id: str,
        field: str,
        value: str | None,
        actor: str,
        event_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Change | None:
        """Set one value; returns the change, or None when the value was already that."""
        row = await self._s.get(FieldValue, (cert_id, field))
        old = row.value if row else None
        if row is not None and old == value:
            return None
        if row is None:
            row = FieldValue(cert_id=cert_id, field=field)
        row.value, row.updated_at, row.actor = value, self._now, actor
        self._s.add(row)
        self._s.add(
            HistoryEntry(
                cert_id=cert_id,
                field=field,
                old=old,
                new=value,
                actor=actor,
                changed_at=self._now,
                event_id=event_id,
                correlation_id=correlation_id,
            )
        )
        await self._s.flush()
        return Change(cert_id, field, old, value, actor)

    async def history(self, cert_id: str) -> list[dict[str, Any]]:
        rows = (
            await self._s.exec(
                select(HistoryEntry)
                .where(HistoryEntry.cert_id == cert_id)
                .order_by(col(HistoryEntry.id))
            )
        ).all()
        return [
            {
                "field": r.field,
                "old": r.old,
                "new": r.new,
                "actor": r.actor,
                "changed_at": _utc(r.changed_at).isoformat(),
                "event_id": r.event_id,
            }
            for r in rows
        ]

    async def compare(self, cert_id: str, expected: dict[str, Any]) -> dict[str, Any]:
        actual = await self.fields(cert_id)
        differences = {
            name: {"expected": want, "actual": actual.get(name)}
            for name, want in expected.items()
            if _as_text(want) != actual.get(name)
        }
        return {"cert_id": cert_id, "match": not differences, "differences": differences}

    async def certificates_of(self, owner: str) -> list[str]:
        rows = (
            await self._s.exec(
                select(KnownCertificate.cert_id)
                .where(KnownCertificate.owner == owner)
                .order_by(col(KnownCertificate.cert_id))
            )
        ).all()
        return list(rows)

    async def disable_owner(self, owner: str, event_id: str) -> None:
        if not await self._s.get(DisabledOwner, owner):
            self._s.add(DisabledOwner(owner=owner, event_id=event_id, disabled_at=self._now))
            await self._s.flush()

    async def enable_owner(self, owner: str, onboarded_at: datetime) -> bool:
        """A rehire (onboarded after the disabling): later certificates start enabled again."""
        row = await self._s.get(DisabledOwner, owner)
        if row is None or _utc(row.disabled_at) >= onboarded_at:
            return False
        await self._s.delete(row)
        await self._s.flush()
        return True

    async def owner_is_disabled(self, owner: str | None) -> bool:
        return bool(owner) and await self._s.get(DisabledOwner, owner) is not None


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
