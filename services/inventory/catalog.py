"""The certificate catalog: what was issued, what was revoked, and where each one lives."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import delete, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory import prefetch
from services.inventory.tables import Certificate, CertificateEvent, CertificateField, Location
from services.inventory.timeutil import as_utc, iso
from shared import pki
from shared.clock import utcnow
from shared.events import (
    CertInstalled,
    CertIssued,
    CertMetadataChanged,
    CertRemoved,
    CertRevoked,
    Event,
    StoreTarget,
)

PRIVATE_FIELDS = {"certificate_pem", "chain_pem"}


def common_name(subject_dn: str | None) -> str | None:
    """The CN of an RFC 4514 DN (``CN=alice,O=Example``), or ``None``."""
    if not subject_dn:
        return None
    try:
        name = x509.Name.from_rfc4514_string(subject_dn)
    except ValueError:
        return None
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def _created(session: AsyncSession) -> set[str]:
    """Certificates first recorded in this transaction: no history or fields to look up."""
    return session.info.setdefault("inventory_created_certs", set())


async def history(session: AsyncSession, cert_id: str, ev: Event, **details: Any) -> None:
    seen: set[tuple[str, str]] = session.info.setdefault("inventory_history", set())
    if (cert_id, ev.event_id) in seen:
        return
    if cert_id not in _created(session):
        exists = await session.exec(
            select(CertificateEvent.id).where(
                CertificateEvent.cert_id == cert_id, CertificateEvent.event_id == ev.event_id
            )
        )
        if exists.first() is not None:
            return
    seen.add((cert_id, ev.event_id))
    session.add(
        CertificateEvent(
            cert_id=cert_id,
            event_id=ev.event_id,
            subject=ev.subject_name(),
            occurred_at=ev.occurred_at,
            actor=ev.actor,
            details=details,
        )
    )


async def set_fields(session: AsyncSession, cert_id: str, values: dict[str, str]) -> None:
    if cert_id not in _created(session):
        await session.exec(delete(CertificateField).where(col(CertificateField.cert_id) == cert_id))
    for key, value in values.items():
        session.add(CertificateField(cert_id=cert_id, field=key, value=value))


async def record_issued(session: AsyncSession, ev: CertIssued) -> tuple[Certificate, bool]:
    """Record (or complete) a certificate; returns it and whether it was new to the catalog."""
    row = await prefetch.lookup(session, Certificate, ev.cert_id)
    new = row is None or row.source == "placeholder"
    if row is None:
        row = Certificate(cert_id=ev.cert_id, serial=ev.serial)
        prefetch.added(session, row, ev.cert_id)
        _created(session).add(ev.cert_id)
    if new:
        for key in (
            "serial", "issuer_ca", "issuer_dn", "subject_dn", "sans", "thumbprint_sha1",
            "thumbprint_sha256", "public_key_sha256", "not_before", "not_after", "template",
            "key_type", "key_size", "signature_algorithm", "owner", "device", "request_id",
            "certificate_pem", "chain_pem",
        ):  # fmt: skip
            setattr(row, key, getattr(ev, key))
        row.serial = ev.serial.lower()
        row.cn = common_name(ev.subject_dn)
        row.metadata_ = dict(ev.metadata)
        row.source = "issued"
        await set_fields(session, ev.cert_id, dict(ev.metadata))
    await history(session, ev.cert_id, ev, serial=ev.serial, template=ev.template, owner=ev.owner)
    return row, new


async def record_revoked(session: AsyncSession, ev: CertRevoked) -> tuple[Certificate, bool]:
    """Mark a certificate revoked; returns it and whether this changed its status."""
    row = await session.get(Certificate, ev.cert_id)
    if row is None:
        # The revocation overtook the issuance on the bus: keep what we know until it arrives.
        row = Certificate(
            cert_id=ev.cert_id, serial=ev.serial.lower(), issuer_ca=ev.issuer_ca, owner=ev.owner,
            source="placeholder",
        )  # fmt: skip
        session.add(row)
    changed = row.status != "revoked"
    row.status = "revoked"
    row.revocation_reason = ev.reason.rfc_name
    row.revocation_comment = ev.comment
    row.revoked_at = ev.revoked_at
    await history(session, ev.cert_id, ev, reason=ev.reason.rfc_name, comment=ev.comment)
    return row, changed


async def record_metadata(session: AsyncSession, ev: CertMetadataChanged) -> None:
    row = await session.get(Certificate, ev.cert_id)
    if row is None:
        return
    values = dict(row.metadata_)
    if ev.new is None:
        values.pop(ev.field, None)
    else:
        values[ev.field] = ev.new
    row.metadata_ = values
    field = await session.get(CertificateField, (ev.cert_id, ev.field))
    if ev.new is None and field is not None:
        await session.delete(field)
    elif field is None and ev.new is not None:
        session.add(CertificateField(cert_id=ev.cert_id, field=ev.field, value=ev.new))
    elif field is not None:
        field.value = ev.new
    await history(session, ev.cert_id, ev, field=ev.field, old=ev.old, new=ev.new)


async def record_released(session: AsyncSession, cert_id: str, ev: Event) -> None:
    row = await session.get(Certificate, cert_id)
    if row is not None and row.status == "revoked" and row.revocation_reason == "certificateHold":
        row.status, row.revocation_reason, row.revocation_comment, row.revoked_at = (
            "active", None, None, None,
        )  # fmt: skip
    await history(session, cert_id, ev)


def _location_query(cert_id: str, target: StoreTarget) -> Any:
    return select(Location).where(
        Location.cert_id == cert_id,
        Location.machine == target.machine,
        Location.store_path == target.store_path,
        Location.alias == target.alias,
    )


async def record_installed(session: AsyncSession, ev: CertInstalled) -> Location:
    row = (await session.exec(_location_query(ev.cert_id, ev.target))).first()
    if row is None:
        row = Location(
            cert_id=ev.cert_id,
            machine=ev.target.machine,
            store_type=ev.target.store_type,
            store_path=ev.target.store_path,
            alias=ev.target.alias,
            installed_at=ev.occurred_at,
        )
        session.add(row)
    elif not row.active and as_utc(row.removed_at) <= ev.occurred_at:  # type: ignore[operator]
        row.active, row.removed_at, row.installed_at = True, None, ev.occurred_at
    await history(session, ev.cert_id, ev, **ev.target.model_dump())
    await _replace_others(session, ev)
    return row


async def _replace_others(session: AsyncSession, ev: CertInstalled) -> None:
    """One alias of one store holds one certificate: whatever was there before is gone."""
    others = (
        await session.exec(
            select(Location).where(
                Location.machine == ev.target.machine,
                Location.store_path == ev.target.store_path,
                Location.alias == ev.target.alias,
                Location.cert_id != ev.cert_id,
                Location.active,
            )
        )
    ).all()
    for other in others:
        if as_utc(other.installed_at) <= ev.occurred_at:  # type: ignore[operator]
            other.active, other.removed_at = False, ev.occurred_at
            await history(
                session, other.cert_id, ev, replaced_by=ev.cert_id, **ev.target.model_dump()
            )


async def record_removed(session: AsyncSession, ev: CertRemoved) -> Location | None:
    row = (await session.exec(_location_query(ev.cert_id, ev.target))).first()
    if row is None:
        row = Location(
            cert_id=ev.cert_id,
            machine=ev.target.machine,
            store_type=ev.target.store_type,
            store_path=ev.target.store_path,
            alias=ev.target.alias,
            installed_at=ev.occurred_at,
            active=False,
            removed_at=ev.occurred_at,
        )
        session.add(row)
    elif row.active and as_utc(row.installed_at) <= ev.occurred_at:  # type: ignore[operator]
        row.active, row.removed_at = False, ev.occurred_at
    await history(session, ev.cert_id, ev, found=ev.found, **ev.target.model_dump())
    return row


async def active_locations(session: AsyncSession, cert_id: str) -> list[Location]:
    query = select(Location).where(Location.cert_id == cert_id, Location.active)
    return list((await session.exec(query)).all())


async def locations_of(session: AsyncSession, cert_ids: list[str]) -> dict[str, list[Location]]:
    out: dict[str, list[Location]] = {c: [] for c in cert_ids}
    if not cert_ids:
        return out
    query = select(Location).where(col(Location.cert_id).in_(cert_ids)).order_by(col(Location.id))
    for loc in (await session.exec(query)).all():
        out[loc.cert_id].append(loc)
    return out


async def find(session: AsyncSession, ident: str) -> Certificate | None:
    """By cert id, serial (hex, colons allowed), or SHA-1 / SHA-256 thumbprint."""
    row = await session.get(Certificate, ident)
    if row is not None:
        return row
    key = ident.replace(":", "").strip().lower()
    query = select(Certificate).where(
        or_(
            col(Certificate.serial) == (key.lstrip("0") or "0"),
            col(Certificate.serial) == key,
            col(Certificate.thumbprint_sha1) == key,
            col(Certificate.thumbprint_sha256) == key,
        )
    )
    return (await session.exec(query.limit(1))).first()


def status_of(row: Certificate) -> str:
    if row.status == "revoked":
        return "revoked"
    not_after = as_utc(row.not_after)
    if not_after is not None and not_after < utcnow():
        return "expired"
    return row.status


def location_json(loc: Location) -> dict[str, Any]:
    return {
        "machine": loc.machine,
        "store_type": loc.store_type,
        "store_path": loc.store_path,
        "alias": loc.alias,
        "installed_at": iso(loc.installed_at),
        "active": loc.active,
        "removed_at": iso(loc.removed_at),
    }


def to_json(row: Certificate, locations: list[Location], with_pem: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.cert_id,
        "serial": row.serial,
        "thumbprint_sha1": row.thumbprint_sha1,
        "thumbprint_sha256": row.thumbprint_sha256,
        "public_key_sha256": row.public_key_sha256,
        "subject": row.subject_dn,
        "cn": row.cn,
        "sans": row.sans,
        "issuer": row.issuer_dn,
        "issuer_ca": row.issuer_ca,
        "owner": row.owner,
        "device": row.device,
        "template": row.template,
        "request_id": row.request_id,
        "status": status_of(row),
        "revocation": (
            {
                "reason": row.revocation_reason,
                "comment": row.revocation_comment,
                "revoked_at": iso(row.revoked_at),
            }
            if row.status == "revoked"
            else None
        ),
        "not_before": iso(row.not_before),
        "not_after": iso(row.not_after),
        "key_type": row.key_type,
        "key_size": row.key_size,
        "signature_algorithm": row.signature_algorithm,
        "metadata": row.metadata_,
        "source": row.source,
        "locations": [location_json(loc) for loc in locations if loc.active],
    }
    if with_pem:
        out["certificate_pem"] = row.certificate_pem
        out["chain_pem"] = row.chain_pem
    return out


def from_x509(cert: x509.Certificate, **fields: Any) -> Certificate:
    """A catalog row for a certificate found in a store (not necessarily issued by certbus)."""
    key_type, key_size = pki.describe_key(cert.public_key())
    subject_dn = cert.subject.rfc4514_string()
    return Certificate(
        cert_id=fields.pop("cert_id", None) or f"found-{pki.thumbprint(cert)}",
        serial=pki.render_serial(cert.serial_number),
        issuer_dn=cert.issuer.rfc4514_string(),
        subject_dn=subject_dn,
        cn=common_name(subject_dn),
        thumbprint_sha1=pki.thumbprint(cert, "sha1"),
        thumbprint_sha256=pki.thumbprint(cert),
        public_key_sha256=pki.public_key_sha256(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_type=key_type,
        key_size=key_size,
        signature_algorithm=pki.signature_algorithm_name(cert),
        certificate_pem=pki.pem(cert),
        source="discovered",
        **fields,
    )


async def count(session: AsyncSession) -> int:
    return int((await session.exec(select(func.count()).select_from(Certificate))).one())
