"""What agents report back: store inventories (and the drift they reveal), discoveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography import x509
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory import catalog, identities, provisioning
from services.inventory.policy import Policy
from services.inventory.stores import record_store
from services.inventory.tables import Certificate, Drift, Location, ProvisioningRequest, User
from services.inventory.timeutil import as_utc
from shared.clock import utcnow
from shared.events import (
    AgentJobCompleted,
    CertDriftDetected,
    CertInstalled,
    CertRemoved,
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


def drift_id(kind: str, cert_id: str, loc: Location) -> str:
    """One drift per occurrence of a condition: its kind, the certificate, the place, and when
    the certificate last came to that place. Inventories that find the same condition again
    while it lasts name the same drift; once it ended (the certificate left, or came back), a
    new occurrence is a new drift."""
    since = as_utc(loc.installed_at)
    assert since is not None
    return derived_id(
        "drift", kind, loc.machine, loc.store_path, loc.alias, cert_id, since.isoformat()
    )


def is_open(row: Drift, loc: Location | None, occupied: bool = False) -> bool:
    """Whether the condition a drift names still holds as far as inventory knows: the
    unexpected certificate is still in its place (same occurrence), or the missing one has not
    come back, nothing else took its place and no fix was sent."""
    if loc is None or row.cert_id is None or drift_id(row.kind, row.cert_id, loc) != row.id:
        return False
    if row.kind == "unexpected":
        return loc.active
    return not loc.active and not row.fixed and not occupied


async def reconcile(session: AsyncSession, policy: Policy, ev: AgentJobCompleted) -> list[Event]:
    """Compare a store's reported content with what inventory expects there."""
    store = StoreTarget(**{**ev.result["store"], "alias": ev.result["store"].get("alias", "-")})
    row = await record_store(session, store, source="inventory")
    row.entries, row.inventoried_at, row.last_job_id = (
        len(ev.result["entries"]),
        utcnow(),
        ev.job_id,
    )
    if row.status != "approved":
        # A store found by discovery is not managed until it is approved.
        return []
    out: list[Event] = []
    reported: set[str] = set()
    for entry in ev.result["entries"]:
        target = store.model_copy(update={"alias": entry["alias"]})
        cert = await _known(session, entry)
        reported.add(cert.cert_id)
        location = await _locate(session, cert, target, ev)
        if cert.status == "revoked":
            reason = f"revoked ({cert.revocation_reason})"
            out += await _drift(session, policy, ev, "unexpected", target, cert, reason, location)
        elif cert.source == "discovered":
            reason = "not issued by certbus"
            out += await _drift(session, policy, ev, "unexpected", target, cert, reason, location)
    expected = await session.exec(
        select(Location).where(
            Location.machine == ev.machine, Location.active, Location.store_path == store.store_path
        )
    )
    for loc in expected.all():
        if loc.cert_id in reported or as_utc(loc.installed_at) > ev.occurred_at:  # type: ignore[operator]
            continue  # reported, or installed after the agent made this report
        expected_cert = await session.get(Certificate, loc.cert_id)
        loc.active, loc.removed_at = False, ev.occurred_at
        target = store.model_copy(update={"alias": loc.alias})
        if expected_cert is None:
            continue
        await _seen(session, ev, CertRemoved, expected_cert, target, found=False)
        if expected_cert.status == "revoked" or expected_cert.source == "discovered":
            continue  # gone from where it should not have been: nothing is missing
        out += await _drift(
            session, policy, ev, "missing", target, expected_cert, "not in the store", loc
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
    catalog._created(session).add(row.cert_id)  # new: no history to look up
    return row


async def _locate(
    session: AsyncSession, cert: Certificate, target: StoreTarget, ev: AgentJobCompleted
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
            installed_at=_at(ev),
        )
        session.add(row)
    elif not row.active:
        # Back where it was removed from: a new stay there (and a new drift, if it is one).
        row.active, row.removed_at, row.installed_at = True, None, _at(ev)
    else:
        return row
    await _seen(session, ev, CertInstalled, cert, target)
    return row


def _at(ev: Event) -> datetime:
    """When the agent made its report, in UTC (so the stored time reads back the same)."""
    return as_utc(ev.occurred_at) or ev.occurred_at


async def _seen(
    session: AsyncSession,
    ev: AgentJobCompleted,
    cls: type[CertInstalled] | type[CertRemoved],
    cert: Certificate,
    target: StoreTarget,
    **fields: Any,
) -> None:
    """A location change a store inventory revealed, in the certificate's history as the
    installation or removal it amounts to (an entry of the history only, never published)."""
    extra = {"thumbprint_sha256": cert.thumbprint_sha256 or ""} if cls is CertInstalled else {}
    change = ev.caused(
        cls,
        event_id=derived_id(
            "inventory", ev.job_id, cls.subject, cert.cert_id, target.machine,
            target.store_path, target.alias,
        ),
        occurred_at=ev.occurred_at,
        cert_id=cert.cert_id,
        serial=cert.serial,
        target=target,
        job_id=ev.job_id,
        **extra,
        **fields,
    )  # fmt: skip
    await catalog.history(
        session, cert.cert_id, change, seen_by="inventory", job_id=ev.job_id,
        **fields, **target.model_dump(),
    )  # fmt: skip


async def _drift(
    session: AsyncSession,
    policy: Policy,
    ev: AgentJobCompleted,
    kind: str,
    target: StoreTarget,
    cert: Certificate,
    reason: str,
    location: Location,
) -> list[Event]:
    ident = drift_id(kind, cert.cert_id, location)
    if await session.get(Drift, ident) is not None:
        return []  # the same occurrence, still open: raised once
    fixes: list[Event] = []
    if policy.auto_fix_drift:
        fixes = await _fix(session, policy, ev, ident, kind, target, cert)
    fix_job = next((getattr(f, "job_id", None) for f in fixes if getattr(f, "job_id", None)), None)
    session.add(
        Drift(
            id=ident,
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
        event_id=ident,
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
    await catalog.history(
        session, cert.cert_id, detected, kind=kind, reason=reason, fixed=bool(fixes),
        fix_job_id=fix_job, inventory_job_id=ev.job_id, **target.model_dump(),
    )  # fmt: skip
    return [detected, *fixes]


async def _fix(
    session: AsyncSession,
    policy: Policy,
    ev: Event,
    ident: str,
    kind: str,
    target: StoreTarget,
    cert: Certificate,
) -> list[Event]:
    if kind == "unexpected" and cert.status == "revoked":
        # Named after the drift: the remove job sent at the revocation has the certificate's
        # place in its id, and sending it again would be a duplicate nobody runs.
        job = await provisioning.remove_job(
            session, ev, cert, target, job_id=derived_id("job", ident, "fix", "remove")
        )
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
