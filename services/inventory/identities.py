"""Users, devices and the links between them, and what the policy gives each device."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory import jobs
from services.inventory import prefetch as prefetch_module
from services.inventory.policy import Person, Policy, Provision
from services.inventory.stores import record_store
from services.inventory.tables import (
    Agent,
    Certificate,
    Device,
    ProvisioningRequest,
    Store,
    User,
    UserDevice,
)
from services.inventory.timeutil import as_utc
from shared.clock import utcnow
from shared.events import (
    AgentJob,
    CertRevocationRequested,
    DeviceAssigned,
    Event,
    JobKind,
    StoreTarget,
    UserOnboarded,
    derived_id,
)
from shared.pki import RevocationReason


def request_id_for(user: str, device: str, template: str) -> str:
    return derived_id("provision", user, device, template)


def _fresh(session: AsyncSession) -> set[str]:
    """Users created in this transaction: they have no links, requests or jobs to look up."""
    return session.info.setdefault("inventory_fresh_users", set())


def _devices(session: AsyncSession) -> dict[str, Device]:
    return session.info.setdefault("inventory_devices", {})


async def prefetch(session: AsyncSession, events: list[UserOnboarded]) -> None:
    """Load the batch's users, devices, agents and stores in four queries."""
    devices = {d for ev in events for d in ev.devices}
    await prefetch_module.load(session, User, User.user, {ev.user for ev in events})
    await prefetch_module.load(session, Device, Device.name, devices)
    await prefetch_module.load(session, Agent, Agent.machine, devices)
    # The session's identity map holds rows weakly: keep the stores found, so record_store
    # finds an existing store instead of inserting it a second time.
    stores = session.info.setdefault("inventory_stores", {})
    if devices:
        found = await session.exec(select(Store).where(Store.machine.in_(devices)))  # type: ignore[attr-defined]
        stores.update({s.id: s for s in found.all()})
    session.info["inventory_store_machines"] = devices
    # A device can be assigned to a user before the user's onboarding is handled (they are
    # separate subjects): such a user has no row yet but has links, so is not "fresh".
    users = [ev.user for ev in events]
    linked = await session.exec(select(UserDevice.user).where(col(UserDevice.user).in_(users)))
    session.info.setdefault("inventory_linked_users", set()).update(linked.all())
    session.info.setdefault("inventory_link_checked", set()).update(users)


async def _has_links(session: AsyncSession, user: str) -> bool:
    if user in session.info.get("inventory_link_checked", ()):
        return user in session.info.get("inventory_linked_users", ())
    found = await session.exec(select(UserDevice.device).where(UserDevice.user == user).limit(1))
    return found.first() is not None


async def upsert_user(session: AsyncSession, ev: UserOnboarded) -> User:
    user = await prefetch_module.lookup(session, User, ev.user)
    if user is None:
        user = User(user=ev.user)
        prefetch_module.added(session, user, ev.user)
        if not await _has_links(session, ev.user):
            _fresh(session).add(ev.user)
    user.email, user.department, user.roles = ev.email, ev.department, list(ev.roles)
    left_at = as_utc(user.offboarded_at)
    if (
        user.status == "offboarded"
        and ev.subject == UserOnboarded.subject
        and (left_at is None or ev.occurred_at > left_at)
    ):
        # A rehire; an onboarding older than the offboarding (a late delivery) is not.
        user.status, user.offboarded_at = "active", None
    user.updated_at = utcnow()
    for name in ev.devices:
        await link(session, ev.user, name)
    return user


async def ensure_device(session: AsyncSession, name: str) -> Device:
    known = _devices(session)
    device = known.get(name) or await prefetch_module.lookup(session, Device, name)
    if device is None:
        device = Device(name=name)
        prefetch_module.added(session, device, name)
    known[name] = device
    return device


async def link(session: AsyncSession, user: str, device: str) -> None:
    await ensure_device(session, device)
    fresh = user in _fresh(session)
    fresh_links = session.info.setdefault("inventory_fresh_links", {}).setdefault(user, [])
    if fresh and device in fresh_links:
        return
    row = None if fresh else await session.get(UserDevice, (user, device))
    if row is None:
        session.add(UserDevice(user=user, device=device))
        if fresh:
            fresh_links.append(device)
    elif not row.active:
        row.active, row.unlinked_at, row.linked_at = True, None, utcnow()


async def unlink(session: AsyncSession, user: str | None, device: str) -> list[str]:
    """Unlink a device from one user (or from everybody); returns the users it left."""
    query = select(UserDevice).where(UserDevice.device == device, UserDevice.active)
    if user:
        query = query.where(UserDevice.user == user)
    left = []
    for row in (await session.exec(query)).all():
        row.active, row.unlinked_at = False, utcnow()
        left.append(row.user)
    return left


async def devices_of(session: AsyncSession, user: str, active_only: bool = True) -> list[str]:
    if user in _fresh(session):
        return sorted(session.info.get("inventory_fresh_links", {}).get(user, []))
    query = select(UserDevice.device).where(UserDevice.user == user)
    if active_only:
        query = query.where(UserDevice.active)
    return sorted((await session.exec(query)).all())


async def provision(session: AsyncSession, policy: Policy, user: User, cause: Event) -> list[Event]:
    """Open a request and a re-enrollment job for every new (device, template) the policy
    gives the user, and retire what it no longer gives (asking for those certificates to be
    revoked as affiliationChanged)."""
    person = Person(user.user, user.email, user.department, tuple(user.roles))
    devices = [d for d in await devices_of(session, user.user) if await _device_usable(session, d)]
    wanted = policy.provisions(person, devices)
    out: list[Event] = []
    for p in wanted:
        job = await _request(session, user.user, p, cause)
        if job is not None:
            out.append(job)
    if user.user in _fresh(session):
        return out
    keep = {(p.device, p.template) for p in wanted}
    for request in await current_requests(session, user.user):
        if (request.device, request.template) not in keep:
            out.extend(
                await retire(
                    session,
                    request,
                    cause,
                    f"the provisioning policy no longer "
                    f"gives {request.template} to {user.user} on {request.device}",
                )
            )
    return out


async def current_requests(
    session: AsyncSession, user: str, device: str | None = None
) -> list[ProvisioningRequest]:
    query = select(ProvisioningRequest).where(
        ProvisioningRequest.user == user, ProvisioningRequest.status != "retired"
    )
    if device:
        query = query.where(ProvisioningRequest.device == device)
    return list((await session.exec(query)).all())


async def retire(
    session: AsyncSession, request: ProvisioningRequest, cause: Event, why: str
) -> list[Event]:
    request.status, request.updated_at = "retired", utcnow()
    if not request.cert_id:
        return []
    cert = await session.get(Certificate, request.cert_id)
    if cert is None or cert.status == "revoked":
        return []
    return [
        cause.caused(
            CertRevocationRequested,
            event_id=derived_id("retire", request.request_id, cause.event_id),
            cert_ids=[request.cert_id],
            reason=RevocationReason.AFFILIATION_CHANGED,
            comment=why,
        )
    ]


async def _device_usable(session: AsyncSession, name: str) -> bool:
    device = _devices(session).get(name) or await session.get(Device, name)
    return device is not None and device.status == "active"


async def _request(session: AsyncSession, user: str, p: Provision, cause: Event) -> AgentJob | None:
    first_id = request_id_for(user, p.device, p.template)
    fresh = user in _fresh(session)
    request_id = first_id
    opened: set[str] = session.info.setdefault("inventory_fresh_requests", set())
    if fresh and first_id in opened:
        return None
    if not fresh:
        current = [
            r for r in await current_requests(session, user, p.device) if r.template == p.template
        ]
        if current:
            return None
        # The first request for a slot has the well-known id; a later one (after retirement)
        # is named after the event that asked for it, so the issuer sees a new request.
        if await session.get(ProvisioningRequest, first_id) is not None:
            request_id = derived_id(first_id, cause.event_id)
            if await session.get(ProvisioningRequest, request_id) is not None:
                return None
    target = StoreTarget(
        machine=p.device, store_type=p.store_type, store_path=p.store_path, alias=p.alias,
        **p.file_names(),
    )  # fmt: skip
    opened.add(request_id)
    session.add(
        ProvisioningRequest(
            request_id=request_id,
            user=user,
            device=p.device,
            template=p.template,
            rule=p.rule,
            target=target.model_dump(),
        )
    )
    await record_store(session, target, source="policy")
    return await jobs.send(
        session,
        cause,
        known_new=fresh,
        job_id=derived_id("job", request_id, "reenroll"),
        machine=p.device,
        kind=JobKind.REENROLL,
        target=target,
        request_id=request_id,
        template=p.template,
        subject_dn=p.subject_dn,
        sans=list(p.sans),
        key_type=p.key_type,
        owner=user,
        payload={"key_generation": "server"} if p.key == "server" else {},
    )


async def assign(session: AsyncSession, ev: DeviceAssigned) -> User | None:
    await ensure_device(session, ev.device)
    if not ev.user:
        return None
    await link(session, ev.user, ev.device)
    return await session.get(User, ev.user)
