"""Users, devices and the links between them, and what the policy gives each device."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory import jobs
from services.inventory.policy import Person, Policy, Provision
from services.inventory.tables import Device, ProvisioningRequest, User, UserDevice
from shared.clock import utcnow
from shared.events import (
    AgentJob,
    DeviceAssigned,
    Event,
    JobKind,
    StoreTarget,
    UserOnboarded,
    derived_id,
)


def request_id_for(user: str, device: str, template: str) -> str:
    return derived_id("provision", user, device, template)


async def upsert_user(session: AsyncSession, ev: UserOnboarded) -> User:
    user = await session.get(User, ev.user)
    if user is None:
        user = User(user=ev.user)
        session.add(user)
    user.email, user.department, user.roles = ev.email, ev.department, list(ev.roles)
    if user.status == "offboarded" and ev.subject == UserOnboarded.subject:
        user.status, user.offboarded_at = "active", None
    user.updated_at = utcnow()
    for name in ev.devices:
        await link(session, ev.user, name)
    return user


async def ensure_device(session: AsyncSession, name: str) -> Device:
    device = await session.get(Device, name)
    if device is None:
        device = Device(name=name)
        session.add(device)
    return device


async def link(session: AsyncSession, user: str, device: str) -> None:
    await ensure_device(session, device)
    row = await session.get(UserDevice, (user, device))
    if row is None:
        session.add(UserDevice(user=user, device=device))
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
    query = select(UserDevice.device).where(UserDevice.user == user)
    if active_only:
        query = query.where(UserDevice.active)
    return sorted((await session.exec(query)).all())


async def provision(
    session: AsyncSession, policy: Policy, user: User, cause: Event
) -> list[AgentJob]:
    """Open a provisioning request and a re-enrollment job for every new (device, template)."""
    person = Person(user.user, user.email, user.department, tuple(user.roles))
    devices = [d for d in await devices_of(session, user.user) if await _device_usable(session, d)]
    out: list[AgentJob] = []
    for p in policy.provisions(person, devices):
        job = await _request(session, user.user, p, cause)
        if job is not None:
            out.append(job)
    return out


async def _device_usable(session: AsyncSession, name: str) -> bool:
    device = await session.get(Device, name)
    return device is not None and device.status == "active"


async def _request(session: AsyncSession, user: str, p: Provision, cause: Event) -> AgentJob | None:
    request_id = request_id_for(user, p.device, p.template)
    existing = await session.get(ProvisioningRequest, request_id)
    if existing is not None and existing.status != "retired":
        return None
    target = StoreTarget(
        machine=p.device, store_type=p.store_type, store_path=p.store_path, alias=p.alias
    )
    attempt = ("reenroll",) if existing is None else ("reenroll", cause.event_id)
    if existing is None:
        session.add(
            ProvisioningRequest(
                request_id=request_id,
                user=user,
                device=p.device,
                template=p.template,
                target=target.model_dump(),
            )
        )
    else:
        existing.status, existing.cert_id, existing.error = "waiting", None, None
        existing.target, existing.updated_at = target.model_dump(), utcnow()
    return await jobs.send(
        session,
        cause,
        job_id=derived_id("job", request_id, *attempt),
        machine=p.device,
        kind=JobKind.REENROLL,
        target=target,
        request_id=request_id,
        template=p.template,
        subject_dn=p.subject_dn,
        sans=list(p.sans),
        key_type=p.key_type,
        owner=user,
    )


async def assign(session: AsyncSession, ev: DeviceAssigned) -> User | None:
    await ensure_device(session, ev.device)
    if not ev.user:
        return None
    await link(session, ev.user, ev.device)
    return await session.get(User, ev.user)
