"""Reading and writing the issuer's rows: issued certificates, serials, revocations."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from sqlalchemy import func, insert, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.issuer.tables import CrlState, IssuedCertificate, RevokedSerial
from shared.events import CertReleased, CertRevoked, Event
from shared.outbox import OutboxMessage
from shared.pki import RevocationReason, parse_serial, render_serial


async def issued_for(
    session: AsyncSession, request_ids: Iterable[str]
) -> dict[str, IssuedCertificate]:
    ids = list(set(request_ids))
    if not ids:
        return {}
    rows = (
        await session.exec(
            select(IssuedCertificate).where(col(IssuedCertificate.request_id).in_(ids))
        )
    ).all()
    return {r.request_id: r for r in rows}


async def get_issued(session: AsyncSession, key: str) -> IssuedCertificate | None:
    """One certificate by cert id, request id, serial or SHA-256 thumbprint."""
    row = await session.get(IssuedCertificate, key)
    if row is not None:
        return row
    conditions = [
        col(IssuedCertificate.request_id) == key,
        col(IssuedCertificate.thumbprint_sha256) == key.lower(),
    ]
    try:
        conditions.append(col(IssuedCertificate.serial) == render_serial(parse_serial(key)))
    except ValueError:
        pass
    return (await session.exec(select(IssuedCertificate).where(or_(*conditions)))).first()


async def fresh_serials(session: AsyncSession, wanted: list[tuple[str, int]]) -> list[int]:
    """The serials asked for, with any already used at the same CA replaced by new random ones."""
    serials = [s for _, s in wanted]
    while True:
        by_ca: dict[str, list[str]] = {}
        for (ca, _), serial in zip(wanted, serials, strict=True):
            by_ca.setdefault(ca, []).append(render_serial(serial))
        used: set[tuple[str, str]] = set()
        for ca, hexes in by_ca.items():
            rows = (
                await session.exec(
                    select(IssuedCertificate.serial).where(
                        IssuedCertificate.ca == ca, col(IssuedCertificate.serial).in_(hexes)
                    )
                )
            ).all()
            used.update((ca, r) for r in rows)
        seen: set[tuple[str, str]] = set()
        clash = False
        for i, (ca, _) in enumerate(wanted):
            key = (ca, render_serial(serials[i]))
            if key in used or key in seen:
                serials[i] = x509.random_serial_number()
                clash = True
            seen.add((ca, render_serial(serials[i])))
        if not clash:
            return serials


ENVELOPE = ("event_id", "occurred_at", "correlation_id", "causation_id", "actor", "schema_version")


def issued_values(fields: dict[str, Any], record: str | None = None) -> dict[str, Any]:
    """A row of ``issuer_certificate``; ``record`` is the JSON kept for answering repeats."""
    return {
        "cert_id": fields["cert_id"],
        "request_id": fields["request_id"],
        "ca": fields["issuer_ca"],
        "serial": fields["serial"],
        "template": fields["template"],
        "owner": fields.get("owner"),
        "thumbprint_sha256": fields["thumbprint_sha256"],
        "not_after": fields["not_after"],
        "issued": record if record is not None else json.dumps(fields, default=str),
    }


def issued_record(row: IssuedCertificate) -> dict[str, Any]:
    """The stored description of an issued certificate, without any event envelope."""
    return without_envelope(json.loads(row.issued))


def without_envelope(data: dict[str, Any]) -> dict[str, Any]:
    for key in ENVELOPE:
        data.pop(key, None)
    return data


def issued_row(fields: dict[str, Any]) -> IssuedCertificate:
    return IssuedCertificate(**issued_values(fields))


async def add_issued(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert issued certificates (``issued_values`` rows) in one statement.

    The ORM's per-object bookkeeping costs more than signing on the bulk path.
    """
    if rows:
        conn = await session.connection()
        await conn.execute(insert(IssuedCertificate.__table__), rows)  # type: ignore[attr-defined]


async def emit_bulk(uow: Any, events: list[tuple[Event, str]]) -> None:
    """Stage (event, its JSON) pairs in the outbox in one statement, as ``uow.emit`` would."""
    if not events:
        return
    conn = await uow.session.connection()
    await conn.execute(
        insert(OutboxMessage.__table__),  # type: ignore[attr-defined]
        [
            {"event_id": e.event_id, "subject": e.subject_name(), "payload": body}
            for e, body in events
        ],
    )
    uow.staged += len(events)


async def _state(session: AsyncSession, ca: str) -> CrlState:
    state = await session.get(CrlState, ca, with_for_update=True)
    if state is None:
        state = CrlState(ca=ca)
        session.add(state)
    return state


async def record_revocations(
    session: AsyncSession, events: Iterable[CertRevoked], cas: set[str]
) -> int:
    """Add revoked serials of our CAs; a serial already on the list changes nothing."""
    changed = 0
    ours = [(ev, render_serial(parse_serial(ev.serial))) for ev in events if ev.issuer_ca in cas]
    seen = await _listed(session, [(ev.issuer_ca, serial) for ev, serial in ours])
    for ev, serial in ours:
        row = seen.get((ev.issuer_ca, serial))
        if row is not None and not row.released and row.reason == int(ev.reason):
            continue
        state = await _state(session, ev.issuer_ca)
        state.changes += 1
        row = row or RevokedSerial(
            ca=ev.issuer_ca, serial=serial, reason=int(ev.reason), revoked_at=ev.revoked_at
        )
        row.reason, row.revoked_at, row.released = int(ev.reason), ev.revoked_at, False
        row.invalidity_date = ev.invalidity_date
        row.changed_seq = state.changes
        seen[(ev.issuer_ca, serial)] = row
        session.add(row)
        session.add(state)
        changed += 1
    return changed


async def _listed(
    session: AsyncSession, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], RevokedSerial]:
    """The revocation rows already recorded for these (CA, serial) pairs, in one query per CA."""
    by_ca: dict[str, list[str]] = {}
    for ca, serial in keys:
        by_ca.setdefault(ca, []).append(serial)
    found: dict[tuple[str, str], RevokedSerial] = {}
    for ca, serials in by_ca.items():
        rows = await session.exec(
            select(RevokedSerial).where(
                RevokedSerial.ca == ca, col(RevokedSerial.serial).in_(set(serials))
            )
        )
        found.update({(r.ca, r.serial): r for r in rows.all()})
    return found


async def record_releases(
    session: AsyncSession, events: Iterable[CertReleased], cas: set[str]
) -> int:
    """A certificate on hold leaves the CRL; one not on hold (or not listed) stays as it is."""
    changed = 0
    for ev in events:
        if ev.issuer_ca not in cas:
            continue
        serial = render_serial(parse_serial(ev.serial))
        row = await session.get(RevokedSerial, (ev.issuer_ca, serial))
        if row is None or row.released or row.reason != RevocationReason.CERTIFICATE_HOLD:
            continue
        state = await _state(session, ev.issuer_ca)
        state.changes += 1
        row.released, row.changed_seq = True, state.changes
        session.add(row)
        session.add(state)
        changed += 1
    return changed


async def count_revoked(session: AsyncSession, ca: str) -> int:
    return (
        await session.exec(
            select(func.count()).select_from(RevokedSerial).where(RevokedSerial.ca == ca)
        )
    ).one()
