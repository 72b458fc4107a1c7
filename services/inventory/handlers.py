"""Inventory's consumers: each takes a batch of events and commits its effects at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory import (
    catalog,
    drift,
    identities,
    jobs,
    offboarding,
    provisioning,
    renewal,
    stores,
)
from services.inventory.policy import Policy
from services.inventory.tables import Agent, Device, User
from shared import subjects
from shared.events import (
    AgentHeartbeat,
    AgentJobCompleted,
    AgentJobFailed,
    CertInstalled,
    CertIssued,
    CertMetadataChanged,
    CertRejected,
    CertReleased,
    CertRemoved,
    CertRevoked,
    DeviceAssigned,
    DeviceDecommissioned,
    DeviceUnassigned,
    Event,
    JobKind,
    UserOffboarded,
    UserOnboarded,
)
from shared.runtime import ServiceRuntime, UnitOfWork

Step = Callable[[AsyncSession, Any], Awaitable[list[Event]]]
Prefetch = Callable[[AsyncSession, list[Any]], Awaitable[None]]


class Handlers:
    def __init__(self, runtime: ServiceRuntime, policy: Policy) -> None:
        self.rt = runtime
        self.policy = policy

    def batch_prefetched(
        self, step: Step, load: Prefetch, check_offboardings: bool = False
    ) -> Callable[[list[Any]], Awaitable[None]]:
        """Like ``batch``, loading the batch's rows first (for bursts of events)."""

        async def handle(events: list[Any]) -> None:
            async with self.rt.unit_of_work() as uow:
                await load(uow.session, events)
                for ev in events:
                    uow.emit(*await step(uow.session, ev))
                if check_offboardings:
                    await self._complete_offboardings(uow)

        handle.__doc__ = step.__doc__
        return handle

    def batch(
        self, step: Step, check_offboardings: bool = True
    ) -> Callable[[list[Any]], Awaitable[None]]:
        async def handle(events: list[Any]) -> None:
            async with self.rt.unit_of_work() as uow:
                for ev in events:
                    uow.emit(*await step(uow.session, ev))
                if check_offboardings:
                    await self._complete_offboardings(uow)

        handle.__doc__ = step.__doc__
        return handle

    async def _complete_offboardings(self, uow: UnitOfWork) -> None:
        uow.emit(*await offboarding.check_open(uow.session))

    async def user_changed(self, session: AsyncSession, ev: UserOnboarded) -> list[Event]:
        """Record the user and devices, then provision what the policy gives each device."""
        user = await identities.upsert_user(session, ev)
        if self.policy.auto_approve_known_devices:
            await stores.approve_known_devices(session, list(ev.devices))
        if user.status == "offboarded":
            return []
        return list(await identities.provision(session, self.policy, user, ev))

    async def user_offboarded(self, session: AsyncSession, ev: UserOffboarded) -> list[Event]:
        """Open the user's offboarding; it completes once every certificate is gone."""
        await offboarding.open_(session, ev)
        return []

    async def device_assigned(self, session: AsyncSession, ev: DeviceAssigned) -> list[Event]:
        """Link the device to its user and provision it."""
        user = await identities.assign(session, ev)
        if self.policy.auto_approve_known_devices:
            await stores.approve_known_devices(session, [ev.device])
        if user is None or user.status == "offboarded":
            return []
        return list(await identities.provision(session, self.policy, user, ev))

    async def device_unassigned(self, session: AsyncSession, ev: DeviceUnassigned) -> list[Event]:
        """Unlink the device; what it held for the user is retired (and revoked)."""
        out: list[Event] = []
        for user in await identities.unlink(session, ev.user, ev.device):
            for request in await identities.current_requests(session, user, ev.device):
                why = f"{ev.device} is no longer assigned to {user}"
                out.extend(await identities.retire(session, request, ev, why))
        return out

    async def device_decommissioned(
        self, session: AsyncSession, ev: DeviceDecommissioned
    ) -> list[Event]:
        """The device is gone: unlink it from everybody."""
        device = await identities.ensure_device(session, ev.device)
        device.status, device.decommissioned_at = "decommissioned", ev.occurred_at
        for user in await identities.unlink(session, None, ev.device):
            for request in await identities.current_requests(session, user, ev.device):
                request.status = "retired"
        return []

    async def cert_issued(self, session: AsyncSession, ev: CertIssued) -> list[Event]:
        """Record the certificate; install it where it was asked for."""
        install, follows = await renewal.issued(session, ev)
        return [*await provisioning.issued(session, ev, install=install), *follows]

    async def cert_rejected(self, session: AsyncSession, ev: CertRejected) -> list[Event]:
        """The request failed: record why."""
        await provisioning.rejected(session, ev)
        await renewal.rejected(session, ev)
        return []

    async def cert_installed(self, session: AsyncSession, ev: CertInstalled) -> list[Event]:
        """Record the location (it replaces what the alias held); a certificate revoked
        meanwhile is removed again at once; a renewal done everywhere retires the old one."""
        await catalog.record_installed(session, ev)
        cert = await session.get(catalog.Certificate, ev.cert_id)
        if cert is not None and cert.status == "revoked":
            job = await provisioning.remove_job(session, ev, cert, ev.target)
            return [job] if job else []
        return await renewal.installed(session, ev)

    async def cert_removed(self, session: AsyncSession, ev: CertRemoved) -> list[Event]:
        """The certificate left a store."""
        await catalog.record_removed(session, ev)
        return []

    async def cert_revoked(self, session: AsyncSession, ev: CertRevoked) -> list[Event]:
        """Mark the certificate revoked and remove it from every store it is in."""
        cert, changed = await catalog.record_revoked(session, ev)
        if not changed:
            return []
        return list(await provisioning.remove_everywhere(session, ev, cert))

    async def cert_released(self, session: AsyncSession, ev: CertReleased) -> list[Event]:
        """A certificate on hold is good again."""
        await catalog.record_released(session, ev.cert_id, ev)
        return []

    async def job_result(
        self, session: AsyncSession, ev: AgentJobCompleted | AgentJobFailed
    ) -> list[Event]:
        """Record what an agent reports about a job (a large result comes in parts); a
        completed inventory reveals drift, once every part of it is in."""
        completed = await jobs.record_result(session, ev)
        if isinstance(ev, AgentJobFailed) and ev.kind in (JobKind.REENROLL, JobKind.ADD):
            await renewal.job_failed(session, ev.job_id, f"{ev.code}: {ev.error}")
        if completed is not None and await self._trusted(session, completed.machine):
            return await drift.job_completed(session, self.policy, completed)
        return []

    async def _trusted(self, session: AsyncSession, machine: str) -> bool:
        agent = await session.get(Agent, machine)
        return agent is None or agent.status == "approved"

    async def heartbeat(self, session: AsyncSession, ev: AgentHeartbeat) -> list[Event]:
        """Register the agent (pending approval unless a rule approves it); note it is alive."""
        await stores.heard_from(
            session, ev, self.policy.auto_approve_agents, self.policy.auto_approve_known_devices
        )
        return []

    async def metadata_changed(self, session: AsyncSession, ev: CertMetadataChanged) -> list[Event]:
        """Keep the catalog's copy of a certificate's metadata current."""
        await catalog.record_metadata(session, ev)
        return []


def register(rt: ServiceRuntime, h: Handlers) -> None:
    rt.consume(subjects.USER_ONBOARDED, h.batch_prefetched(h.user_changed, identities.prefetch))
    rt.consume(subjects.USER_UPDATED, h.batch_prefetched(h.user_changed, identities.prefetch))
    rt.consume(subjects.USER_OFFBOARDED, h.batch(h.user_offboarded))
    rt.consume(subjects.DEVICE_ASSIGNED, h.batch(h.device_assigned, False))
    rt.consume(subjects.DEVICE_UNASSIGNED, h.batch(h.device_unassigned, False))
    rt.consume(subjects.DEVICE_DECOMMISSIONED, h.batch(h.device_decommissioned, False))
    rt.consume(
        subjects.CERT_ISSUED, h.batch_prefetched(h.cert_issued, provisioning.prefetch_issued, True)
    )
    rt.consume(subjects.CERT_REJECTED, h.batch(h.cert_rejected))
    rt.consume(subjects.CERT_INSTALLED, h.batch(h.cert_installed))
    rt.consume(subjects.CERT_REMOVED, h.batch(h.cert_removed))
    rt.consume(subjects.CERT_REVOKED, h.batch(h.cert_revoked))
    rt.consume(subjects.CERT_RELEASED, h.batch(h.cert_released, False))
    rt.consume(subjects.AGENT_JOB_COMPLETED, h.batch(h.job_result, False))
    rt.consume(subjects.AGENT_JOB_FAILED, h.batch(h.job_result, False))
    rt.consume(subjects.AGENT_HEARTBEAT, h.batch(h.heartbeat, False), batch_size=500)
    rt.consume(subjects.CERT_METADATA_CHANGED, h.batch(h.metadata_changed))


__all__ = ["Handlers", "register", "Device", "User"]
