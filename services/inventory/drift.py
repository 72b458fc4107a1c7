"""What agents report back: store inventories (and the drift they reveal), discoveries."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory import catalog, identities, provisioning
from services.inventory.policy import Policy
from services.inventory.stores import record_store
from services.inventory.tables import Certificate, Drift, Location, ProvisioningRequest, User
from shared.clock import utcnow
from shared.events import (
    AgentJobCompleted,
    CertDriftDetected,
    Event,
    JobKind,
    StoreTarget,
    derived_id,
)


async def job_completed(
    session: AsyncSession, policy: Policy, ev: AgentJobCompleted
) -> list[Event]:
    if ev.kind == JobKind.INVENTORY:
        return await reconcile(session, policy, ev)
    if ev.kind == JobKind.DISCOVER:
        await discovered(session, ev)
    return []


async def discovered(session: AsyncSession, ev: AgentJobCompleted) -> None:
    """Stores found by discovery wait for approval unless inventory knew them already."""
    for found in ev.result.get("stores", []):
        if not found.get("manageable", True):
            continue
        target = StoreTarget(
            machine=ev.machine,
            store_type=found["store_type"],
            store_path=found["store_path"],
            alias="-",
        )
        row = await record_store(session, target, source="discovery", status="discovered")
        row.entries = found.get("entries")


async def reconcile(session: AsyncSession, policy: Policy, ev: AgentJobCompleted) -> list[Event]:
    """Compare a store's reported content with what inventory expects there."""
    store = StoreTarget(**{**ev.result["store"], "alias": ev.result["store"].get("alias", "-")})
    row = await record_store(session, store, source="inventory")
    row.entries, row.inventoried_at, row.last_job_id = (
        len(ev.result["entries"]),
        utcnow(),
        ev.job_id,
    )
    out: list[Event] = []
    reported: set[str] = set()
    for entry in ev.result["entries"]:
        target = store.model_copy(update={"alias": entry["alias"]})
        cert = await _known(session, entry)
        reported.add(cert.cert_id)
        location = await _locate(session, cert, target, ev)
        if cert.status == "revoked":
            out += await _drift(
                session,
                policy,
                ev,
                "unexpected",
                target,
                cert,
                f"revoked ({cert.revocation_reason})",
                location,
            )
        elif cert.source == "discovered":
            out += await _drift(
                session, policy, ev, "unexpected", target, cert, "not issued by certbus", None
            )
    expected = await session.exec(
        select(Location).where(
            Location.machine == ev.machine, Location.active, Location.store_path == store.store_path
        )
    )
    for loc in expected.all():
        if loc.cert_id in reported:
            continue
        expected_cert = await session.get(Certificate, loc.cert_id)
        loc.active, loc.removed_at = False, utcnow()
        if expected_cert is None or expected_cert.status == "revoked":
            continue
        target = store.model_copy(update={"alias": loc.alias})
        out += await _drift(
            session, policy, ev, "missing", target, expected_cert, "not in the store", None
        )
    return out


async def _known(session: AsyncSession, entry: dict[str, Any]) -> Certificate:
    found = (
        await session.exec(
            select(Certificate).where(Certificate.thumbprint_sha256 == entry["thumbprint_sha256"])
        )
    ).first()
    if found is not None:
        return found
    parsed = x509.load_pem_x509_certificate(entry["certificate_pem"].encode())
    row = catalog.from_x509(parsed)
    existing = await session.get(Certificate, row.cert_id)
    if existing is not None:
        return existing
    session.add(row)
    return row


async def _locate(
    session: AsyncSession, cert: Certificate, target: StoreTarget, ev: Event
) -> Location:
    row = (
        await session.exec(
            select(Location).where(
                Location.cert_id == cert.cert_id,
                Location.machine == target.machine,
                Location.store_path == target.store_path,
                Location.alias == target.alias,
            )
        )
    ).first()
    if row is None:
        row = Location(
            cert_id=cert.cert_id,
            machine=target.machine,
            store_type=target.store_type,
            store_path=target.store_path,
            alias=target.alias,
            installed_at=ev.occurred_at,
        )
        session.add(row)
    elif not row.active:
        row.active, row.removed_at = True, None
    return row


async def _drift(
    session: AsyncSession,
    policy: Policy,
    ev: AgentJobCompleted,
    kind: str,
    target: StoreTarget,
    cert: Certificate,
    reason: str,
    location: Location | None,
) -> list[Event]:
    drift_id = derived_id("drift", ev.job_id, kind, target.alias, cert.cert_id)
    if await session.get(Drift, drift_id) is not None:
        return []
    fixes: list[Event] = []
    if policy.auto_fix_drift:
        fixes = await _fix(session, policy, ev, kind, target, cert)
    fix_job = next((getattr(f, "job_id", None) for f in fixes if getattr(f, "job_id", None)), None)
    session.add(
        Drift(
            id=drift_id,
            machine=target.machine,
            kind=kind,
            store_type=target.store_type,
            store_path=target.store_path,
            alias=target.alias,
            cert_id=cert.cert_id,
            serial=cert.serial,
            reason=reason,
            fixed=bool(fixes),
            job_id=fix_job,
        )
    )
    detected = ev.caused(
        CertDriftDetected,
        event_id=drift_id,
        kind=kind,
        machine=target.machine,
        target=target,
        cert_id=cert.cert_id,
        serial=cert.serial,
        thumbprint_sha256=cert.thumbprint_sha256,
        reason=reason,
        job_id=fix_job,
        fixed=bool(fixes),
    )
    return [detected, *fixes]


async def _fix(
    session: AsyncSession,
    policy: Policy,
    ev: Event,
    kind: str,
    target: StoreTarget,
    cert: Certificate,
) -> list[Event]:
    if kind == "unexpected" and cert.status == "revoked":
        job = await provisioning.remove_job(session, ev, cert, target)
        return [job] if job else []
    if kind == "missing" and cert.request_id:
        request = await session.get(ProvisioningRequest, cert.request_id)
        user = await session.get(User, request.user) if request else None
        if request is None or user is None or user.status != "active":
            return []
        # The key stayed on the machine and is gone with the files: enroll anew.
        retired = await identities.retire(session, request, ev, "its store lost it; re-enrolled")
        return [*retired, *await identities.provision(session, policy, user, ev)]
    return []
