"""What the revocation service knows of other services' facts: certificates, where they are
installed and whose devices they sit on. Every update is idempotent."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, or_
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.revocation.models import DeviceOwner, Installation, KnownCertificate
from shared.events import CertInstalled, CertIssued, CertRemoved
from shared.pki import parse_serial, render_serial


async def record_issued(session: AsyncSession, ev: CertIssued) -> KnownCertificate:
    known = await session.get(KnownCertificate, ev.cert_id)
    if known is not None:
        return known
    known = _known(ev)
    session.add(known)
    await session.flush()
    return known


def _known(ev: CertIssued) -> KnownCertificate:
    return KnownCertificate(
        cert_id=ev.cert_id,
        serial=normal_serial(ev.serial),
        issuer_ca=ev.issuer_ca,
        owner=ev.owner,
        device=ev.device or (ev.target.machine if ev.target else None),
        public_key_sha256=ev.public_key_sha256.lower(),
        thumbprint_sha1=ev.thumbprint_sha1.lower(),
        thumbprint_sha256=ev.thumbprint_sha256.lower(),
        subject_dn=ev.subject_dn,
        not_after=ev.not_after,
    )


async def record_issued_many(
    session: AsyncSession, events: list[CertIssued]
) -> list[KnownCertificate]:
    """``record_issued`` for a batch: one query for what is known already, one insert."""
    ids = sorted({ev.cert_id for ev in events})
    known: dict[str, KnownCertificate] = {}
    for chunk in _chunks(ids):
        rows = await session.exec(
            select(KnownCertificate).where(KnownCertificate.cert_id.in_(chunk))  # type: ignore[attr-defined]
        )
        known.update({c.cert_id: c for c in rows.all()})
    fresh = []
    for ev in events:
        if ev.cert_id not in known:
            known[ev.cert_id] = _known(ev)
            fresh.append(known[ev.cert_id])
    session.add_all(fresh)
    await session.flush()
    return [known[ev.cert_id] for ev in events]


async def installed_machines(
    session: AsyncSession, certs: list[KnownCertificate]
) -> dict[str, set[str]]:
    """The machines each certificate is installed on or was issued for."""
    machines: dict[str, set[str]] = {c.cert_id: ({c.device} if c.device else set()) for c in certs}
    for chunk in _chunks(sorted(machines)):
        rows = await session.exec(
            select(Installation).where(Installation.cert_id.in_(chunk))  # type: ignore[attr-defined]
        )
        for install in rows.all():
            machines[install.cert_id].add(install.machine)
    return machines


async def record_installed(session: AsyncSession, ev: CertInstalled) -> Installation:
    key = (ev.cert_id, ev.target.machine, ev.target.store_path, ev.target.alias)
    existing = await session.get(Installation, key)
    if existing is not None:
        return existing
    row = Installation(
        cert_id=ev.cert_id,
        machine=ev.target.machine,
        store_path=ev.target.store_path,
        alias=ev.target.alias,
        serial=normal_serial(ev.serial),
    )
    session.add(row)
    await session.flush()
    return row


async def record_removed(session: AsyncSession, ev: CertRemoved) -> None:
    await session.exec(  # type: ignore[call-overload]
        delete(Installation).where(
            Installation.cert_id == ev.cert_id,  # type: ignore[arg-type]
            Installation.machine == ev.target.machine,  # type: ignore[arg-type]
            Installation.store_path == ev.target.store_path,  # type: ignore[arg-type]
            Installation.alias == ev.target.alias,  # type: ignore[arg-type]
        )
    )


async def assign_devices(session: AsyncSession, user: str, devices: Iterable[str]) -> list[str]:
    """Give ``devices`` to ``user``; returns the devices that changed hands."""
    changed = []
    for name in devices:
        row = await session.get(DeviceOwner, name)
        if row is None:
            session.add(DeviceOwner(device=name, user=user))
            changed.append(name)
        elif row.user != user:
            row.user = user
            session.add(row)
            changed.append(name)
    await session.flush()
    return changed


async def replace_devices(session: AsyncSession, user: str, devices: list[str]) -> list[str]:
    """The user's devices are exactly ``devices`` now (``user.updated`` lists them all)."""
    await session.exec(  # type: ignore[call-overload]
        delete(DeviceOwner).where(
            DeviceOwner.user == user,  # type: ignore[arg-type]
            DeviceOwner.device.not_in(devices),  # type: ignore[attr-defined]
        )
    )
    return await assign_devices(session, user, devices)


async def unassign_device(session: AsyncSession, device: str, user: str | None) -> None:
    row = await session.get(DeviceOwner, device)
    if row is not None and (user is None or row.user == user):
        await session.delete(row)
        await session.flush()


async def devices_of(session: AsyncSession, user: str) -> list[str]:
    rows = await session.exec(select(DeviceOwner.device).where(DeviceOwner.user == user))  # type: ignore[call-overload]
    return [r[0] if isinstance(r, tuple) else r for r in rows.all()]


async def owners_of(session: AsyncSession, devices: Iterable[str]) -> set[str]:
    names = sorted(set(devices))
    if not names:
        return set()
    rows = await session.exec(select(DeviceOwner.user).where(DeviceOwner.device.in_(names)))  # type: ignore[call-overload,attr-defined]
    return {r[0] if isinstance(r, tuple) else r for r in rows.all()}


async def machines_of(session: AsyncSession, cert: KnownCertificate) -> set[str]:
    rows = await session.exec(
        select(Installation.machine).where(Installation.cert_id == cert.cert_id)
    )  # type: ignore[call-overload]
    machines = {r[0] if isinstance(r, tuple) else r for r in rows.all()}
    if cert.device:
        machines.add(cert.device)
    return machines


async def certificates_on(session: AsyncSession, devices: Iterable[str]) -> list[KnownCertificate]:
    """Certificates installed on, or issued for, any of ``devices``."""
    names = sorted(set(devices))
    if not names:
        return []
    installed = select(Installation.cert_id).where(Installation.machine.in_(names))  # type: ignore[attr-defined]
    rows = await session.exec(
        select(KnownCertificate).where(
            or_(KnownCertificate.cert_id.in_(installed), KnownCertificate.device.in_(names))  # type: ignore[attr-defined,union-attr]
        )
    )
    return list(rows.all())


async def certificates_of_user(session: AsyncSession, user: str) -> list[KnownCertificate]:
    """Certificates issued to ``user`` or installed on (or issued for) one of the user's devices."""
    owned = (
        await session.exec(select(KnownCertificate).where(KnownCertificate.owner == user))
    ).all()
    on_devices = await certificates_on(session, await devices_of(session, user))
    by_id = {c.cert_id: c for c in [*owned, *on_devices]}
    return [by_id[k] for k in sorted(by_id)]


def _chunks(values: list[str], size: int = 500) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


async def certificates_of_users(
    session: AsyncSession, users: list[str]
) -> dict[str, list[KnownCertificate]]:
    """``certificates_of_user`` for many users with a handful of queries."""
    found: dict[str, dict[str, KnownCertificate]] = {u: {} for u in users}
    device_user: dict[str, str] = {}
    for chunk in _chunks(sorted(set(users))):
        for cert in (
            await session.exec(select(KnownCertificate).where(KnownCertificate.owner.in_(chunk)))  # type: ignore[union-attr]
        ).all():
            found[cert.owner][cert.cert_id] = cert  # type: ignore[index]
        for row in (
            await session.exec(select(DeviceOwner).where(DeviceOwner.user.in_(chunk)))  # type: ignore[attr-defined]
        ).all():
            device_user[row.device] = row.user
    for chunk in _chunks(sorted(device_user)):
        installs = (
            await session.exec(select(Installation).where(Installation.machine.in_(chunk)))  # type: ignore[attr-defined]
        ).all()
        machines_of_cert: dict[str, set[str]] = {}
        for install in installs:
            machines_of_cert.setdefault(install.cert_id, set()).add(install.machine)
        certs = (
            await session.exec(
                select(KnownCertificate).where(
                    or_(
                        KnownCertificate.cert_id.in_(sorted(machines_of_cert)),  # type: ignore[attr-defined]
                        KnownCertificate.device.in_(chunk),  # type: ignore[union-attr]
                    )
                )
            )
        ).all()
        for cert in certs:
            machines = set(machines_of_cert.get(cert.cert_id, ()))
            if cert.device in device_user:
                machines.add(cert.device)
            for machine in machines:
                if machine in device_user:
                    found[device_user[machine]][cert.cert_id] = cert
    return {u: [certs[k] for k in sorted(certs)] for u, certs in found.items()}


async def find_certificate(session: AsyncSession, ident: str) -> KnownCertificate | None:
    """By certificate id, serial (hex, colons allowed) or SHA-1 / SHA-256 thumbprint."""
    known = await session.get(KnownCertificate, ident)
    if known is not None:
        return known
    text = ident.strip().lower().replace(":", "")
    for column in (KnownCertificate.thumbprint_sha256, KnownCertificate.thumbprint_sha1):
        row = (await session.exec(select(KnownCertificate).where(column == text))).first()
        if row is not None:
            return row
    try:
        serial = normal_serial(text)
    except ValueError:
        return None
    return (
        await session.exec(select(KnownCertificate).where(KnownCertificate.serial == serial))
    ).first()


def normal_serial(text: str) -> str:
    return render_serial(parse_serial(text))
