"""Inventory's operations for people and scripts: identities, agents, stores, jobs, history."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory import catalog, drift, jobs, offboarding, stores
from services.inventory.reads import Reads
from services.inventory.tables import (
    Agent,
    Certificate,
    CertificateEvent,
    Device,
    Drift,
    Job,
    Location,
    Offboarding,
    ProvisioningRequest,
    Store,
    User,
    UserDevice,
)
from services.inventory.timeutil import iso
from shared.bus import RpcError
from shared.clock import utcnow
from shared.events import (
    STORE_TYPES,
    Event,
    JobKind,
    StoreTarget,
    StoreType,
    derived_id,
    is_store_type,
    new_id,
)
from shared.runtime import ServiceRuntime


def _page(req: dict[str, Any]) -> tuple[int, int]:
    return max(1, min(int(req.get("limit") or 100), 1000)), max(0, int(req.get("offset") or 0))


def _required(req: dict[str, Any], key: str) -> str:
    value = str(req.get(key) or "").strip()
    if not value:
        raise RpcError("invalid_request", f"{key} is required", 422)
    return value


async def _refuse_unapproved(session: AsyncSession, machine: str) -> None:
    """Jobs go to approved agents, or to machines whose agent has not registered yet."""
    agent = await session.get(Agent, machine)
    if agent is not None and agent.status != "approved":
        raise RpcError(
            "agent_not_approved", f"the agent on {machine} is {agent.status}; approve it first", 409
        )


class AdminApi:
    def __init__(self, rt: ServiceRuntime, offline_after: float, reads: Reads) -> None:
        self.rt = rt
        self.db = reads
        self.offline_after = offline_after

    async def _cert(self, session: AsyncSession, ident: str) -> Certificate:
        row = await catalog.find(session, ident)
        if row is None:
            raise RpcError("not_found", f"no certificate {ident!r}", 404)
        return row

    async def certs_history(self, req: dict[str, Any]) -> dict[str, Any]:
        """Every event in a certificate's life, oldest first."""
        async with self.db.session() as s:
            cert = await self._cert(s, _required(req, "id"))
            rows = (
                await s.exec(
                    select(CertificateEvent)
                    .where(CertificateEvent.cert_id == cert.cert_id)
                    .order_by(CertificateEvent.occurred_at, CertificateEvent.id)  # type: ignore[arg-type]
                )
            ).all()
        items = [
            {"event_id": r.event_id, "subject": r.subject, "occurred_at": iso(r.occurred_at),
             "actor": r.actor, "details": r.details}
            for r in rows
        ]  # fmt: skip
        return {"id": cert.cert_id, "items": items}

    async def certs_locations(self, req: dict[str, Any]) -> dict[str, Any]:
        """Where a certificate is installed now, and where it was."""
        async with self.db.session() as s:
            cert = await self._cert(s, _required(req, "id"))
            locations = (await catalog.locations_of(s, [cert.cert_id]))[cert.cert_id]
        return {"id": cert.cert_id, "items": [catalog.location_json(loc) for loc in locations]}

    async def users_list(self, req: dict[str, Any]) -> dict[str, Any]:
        limit, offset = _page(req)
        async with self.db.session() as s:
            query = select(User)
            if req.get("status"):
                query = query.where(User.status == req["status"])
            if req.get("department"):
                query = query.where(User.department == req["department"])
            total = (await s.exec(select(func.count()).select_from(query.subquery()))).one()
            rows = (await s.exec(query.order_by(User.user).limit(limit).offset(offset))).all()
            items = [await self._user_json(s, u) for u in rows]
        return {"items": items, "total": int(total)}

    async def users_get(self, req: dict[str, Any]) -> dict[str, Any]:
        name = _required(req, "user")
        async with self.db.session() as s:
            user = await s.get(User, name)
            if user is None:
                raise RpcError("not_found", f"no user {name!r}", 404)
            out = await self._user_json(s, user)
            requests = (
                await s.exec(select(ProvisioningRequest).where(ProvisioningRequest.user == name))
            ).all()
            out["provisioning"] = [
                {"request_id": r.request_id, "device": r.device, "template": r.template,
                 "status": r.status, "cert_id": r.cert_id, "error": r.error, "rule": r.rule,
                 "created_at": iso(r.created_at), "updated_at": iso(r.updated_at)}
                for r in requests
            ]  # fmt: skip
            owned = select(func.count()).select_from(Certificate).where(Certificate.owner == name)
            out["certificates"] = int((await s.exec(owned)).one())
        return out

    async def _user_json(self, s: AsyncSession, u: User) -> dict[str, Any]:
        links = (await s.exec(select(UserDevice).where(UserDevice.user == u.user))).all()
        return {
            "user": u.user, "email": u.email, "department": u.department, "roles": u.roles,
            "status": u.status, "updated_at": iso(u.updated_at),
            "offboarded_at": iso(u.offboarded_at),
            "devices": sorted(link.device for link in links if link.active),
        }  # fmt: skip

    async def devices_list(self, req: dict[str, Any]) -> dict[str, Any]:
        limit, offset = _page(req)
        async with self.db.session() as s:
            total = (await s.exec(select(func.count()).select_from(Device))).one()
            rows = (
                await s.exec(select(Device).order_by(Device.name).limit(limit).offset(offset))
            ).all()  # type: ignore[arg-type]
            items = [await self._device_json(s, d) for d in rows]
        return {"items": items, "total": int(total)}

    async def devices_get(self, req: dict[str, Any]) -> dict[str, Any]:
        name = _required(req, "name")
        async with self.db.session() as s:
            device = await s.get(Device, name)
            if device is None:
                raise RpcError("not_found", f"no device {name!r}", 404)
            out = await self._device_json(s, device)
            located = select(Location).where(Location.machine == name, Location.active)
            out["locations"] = [
                {"cert_id": loc.cert_id, **catalog.location_json(loc)}
                for loc in (await s.exec(located)).all()
            ]
            agent = await s.get(Agent, name)
            out["agent"] = stores.agent_json(agent, self.offline_after) if agent else None
        return out

    async def _device_json(self, s: AsyncSession, d: Device) -> dict[str, Any]:
        links = (await s.exec(select(UserDevice).where(UserDevice.device == d.name))).all()
        return {"name": d.name, "kind": d.kind, "status": d.status,
                "created_at": iso(d.created_at), "decommissioned_at": iso(d.decommissioned_at),
                "users": sorted(link.user for link in links if link.active)}  # fmt: skip

    async def agents_list(self, req: dict[str, Any]) -> dict[str, Any]:
        """Every agent that ever reported, with its approval and whether it is online."""
        async with self.db.session() as s:
            query = select(Agent).order_by(Agent.machine)  # type: ignore[arg-type]
            if req.get("status"):
                query = query.where(Agent.status == req["status"])
            rows = (await s.exec(query)).all()
        now = utcnow()
        items = [stores.agent_json(a, self.offline_after, now) for a in rows]
        if req.get("state"):
            items = [a for a in items if a["state"] == req["state"]]
        return {"items": items, "total": len(items)}

    async def agents_approve(self, req: dict[str, Any]) -> dict[str, Any]:
        """Approve (or, with reject=true, reject) an agent."""
        machine = _required(req, "machine")
        async with self.rt.unit_of_work() as uow:
            agent = await uow.session.get(Agent, machine)
            if agent is None:
                # No pre-approval here: a typo would approve a machine nobody runs. Machines
                # whose agents have not reported are approved by the policy's
                # agents.auto_approve patterns, or by HR naming them as devices.
                raise RpcError(
                    "not_found",
                    f"no agent has registered from {machine!r} (an agent registers with its "
                    "first heartbeat); to approve it beforehand, match it in the policy's "
                    "agents.auto_approve or name it as a user's device",
                    404,
                )
            agent.status = "rejected" if req.get("reject") else "approved"
            agent.decided_at, agent.decided_by = utcnow(), str(req.get("actor") or "api")
            return stores.agent_json(agent, self.offline_after)

    async def _send(self, req: dict[str, Any], **fields: Any) -> dict[str, Any]:
        machine = fields["machine"]
        async with self.rt.unit_of_work() as uow:
            await _refuse_unapproved(uow.session, machine)
            cause = Event(actor=str(req.get("actor") or "api"))
            fields.setdefault("job_id", new_id())
            job = await jobs.send(uow.session, cause, **fields)
            assert job is not None
            uow.emit(job)
            row = await uow.session.get(Job, job.job_id)
            assert row is not None
            return jobs.to_json(row)

    async def agents_discover(self, req: dict[str, Any]) -> dict[str, Any]:
        """Ask an agent to scan directories for certificate files and key stores."""
        paths = req.get("paths") or ["."]
        return await self._send(
            req,
            machine=_required(req, "machine"),
            kind=JobKind.DISCOVER,
            payload={"paths": list(paths), "max_depth": int(req.get("max_depth") or 6)},
        )

    async def stores_list(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self.db.session() as s:
            rows = await stores.stores_of(s, req.get("machine"))
        items = [
            stores.store_json(r) for r in rows if not req.get("status") or r.status == req["status"]
        ]
        return {"items": items, "total": len(items)}

    async def stores_add(self, req: dict[str, Any]) -> dict[str, Any]:
        """Register a store on a machine and have the agent create it."""
        machine, store_path = _required(req, "machine"), _required(req, "store_path")
        store_type = str(req.get("store_type") or "pem")
        if not is_store_type(store_type):
            raise RpcError("invalid_store_type", f"store_type must be one of {STORE_TYPES}", 422)
        target = StoreTarget(
            machine=machine,
            store_type=store_type,
            store_path=store_path,
            alias="-",
        )
        async with self.db.session() as s:
            await _refuse_unapproved(s, machine)  # before the store exists, not after
        async with self.rt.unit_of_work() as uow:
            row = await stores.record_store(uow.session, target, source="api")
            row.status = "approved"
            store = stores.store_json(row)
        job = await self._send(req, machine=machine, kind=JobKind.CREATE, target=target)
        return {**store, "job": job}

    async def _store(self, ident: str, approved: bool = False) -> Store:
        async with self.db.session() as s:
            row = await s.get(Store, ident)
        if row is None:
            raise RpcError("not_found", f"no store {ident!r}", 404)
        if approved and row.status != "approved":
            raise RpcError(
                "store_not_approved",
                f"store {ident} ({row.store_type} {row.store_path} on {row.machine}) is "
                f"{row.status}; approve it first (stores.approve)",
                409,
            )
        return row

    async def stores_approve(self, req: dict[str, Any]) -> dict[str, Any]:
        """Approve a store found by discovery, so inventory manages it."""
        ident = _required(req, "id")
        async with self.rt.unit_of_work() as uow:
            row = await uow.session.get(Store, ident)
            if row is None:
                raise RpcError("not_found", f"no store {ident!r}", 404)
            row.status = "approved"
            return stores.store_json(row)

    async def stores_inventory(self, req: dict[str, Any]) -> dict[str, Any]:
        """Ask the store's agent to report everything in it (an approved store only)."""
        row = await self._store(_required(req, "id"), approved=True)
        target = StoreTarget(
            machine=row.machine,
            store_type=cast(StoreType, row.store_type),
            store_path=row.store_path,
            alias="-",
        )
        return await self._send(req, machine=row.machine, kind=JobKind.INVENTORY, target=target)

    async def stores_enroll(self, req: dict[str, Any]) -> dict[str, Any]:
        """Have the store's agent make a key, send a CSR and install the certificate.

        The private key never leaves the machine. The request id defaults to one derived from
        the store, alias, template and subject, so running the same script twice issues once.
        """
        row = await self._store(_required(req, "id"), approved=True)
        template, subject = _required(req, "template"), _required(req, "subject")
        alias = str(req.get("alias") or template)
        owner = str(req.get("owner") or "")
        request_id = str(req.get("request_id") or derived_id(
            "enroll", row.id, alias, template, subject))  # fmt: skip
        target = StoreTarget(
            machine=row.machine,
            store_type=cast(StoreType, row.store_type),
            store_path=row.store_path,
            alias=alias,
        )
        async with self.db.session() as s:
            known = await s.get(ProvisioningRequest, request_id)
        if known is None:
            async with self.rt.unit_of_work() as uow:
                uow.session.add(ProvisioningRequest(
                    request_id=request_id, user=owner, device=row.machine, template=template,
                    rule="api", target=target.model_dump()))  # fmt: skip
        job_id = derived_id("job", request_id, "reenroll")
        async with self.db.session() as s:
            existing = await s.get(Job, job_id)
        if existing is not None:
            return {"request_id": request_id, "job": jobs.to_json(existing), "created": False}
        job = await self._send(
            req, machine=row.machine, kind=JobKind.REENROLL, target=target, job_id=job_id,
            request_id=request_id, template=template, subject_dn=subject,
            sans=list(req.get("sans") or []), key_type=str(req.get("key_type") or "ec-p256"),
            owner=owner or None,
        )  # fmt: skip
        return {"request_id": request_id, "job": job, "created": True}

    async def jobs_list(self, req: dict[str, Any]) -> dict[str, Any]:
        limit, offset = _page(req)
        async with self.db.session() as s:
            query = select(Job)
            for key in ("machine", "status", "kind", "cert_id", "request_id"):
                if req.get(key):
                    query = query.where(getattr(Job, key) == req[key])
            total = (await s.exec(select(func.count()).select_from(query.subquery()))).one()
            rows = (
                await s.exec(
                    query.order_by(Job.created_at.desc(), Job.job_id)  # type: ignore[attr-defined]
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return {"items": [jobs.to_json(r) for r in rows], "total": int(total)}

    async def jobs_get(self, req: dict[str, Any]) -> dict[str, Any]:
        ident = _required(req, "id")
        async with self.db.session() as s:
            row = await s.get(Job, ident)
        if row is None:
            raise RpcError("not_found", f"no job {ident!r}", 404)
        return jobs.to_json(row)

    async def drift_list(self, req: dict[str, Any]) -> dict[str, Any]:
        """Drift, newest first; ``open`` while its condition lasts, ``last_seen`` then being
        the last inventory of its store (which found it again, or raised it)."""
        limit, offset = _page(req)
        async with self.db.session() as s:
            query = select(Drift)
            if req.get("machine"):
                query = query.where(Drift.machine == req["machine"])
            rows = (
                await s.exec(query.order_by(Drift.detected_at.desc()).limit(limit).offset(offset))  # type: ignore[attr-defined]
            ).all()
            items = [await self._drift_json(s, d) for d in rows]
        return {"items": items}

    async def _drift_json(self, s: AsyncSession, d: Drift) -> dict[str, Any]:
        here = (
            await s.exec(
                select(Location).where(Location.machine == d.machine,
                                       Location.store_path == d.store_path,
                                       Location.alias == d.alias)
            )
        ).all()  # fmt: skip
        loc = next((x for x in here if x.cert_id == d.cert_id), None)
        occupied = any(x.active and x.cert_id != d.cert_id for x in here)
        is_open = drift.is_open(d, loc, occupied)
        store = await s.get(Store, stores.store_id(d.machine, d.store_type, d.store_path))
        last_seen = store.inventoried_at if is_open and store else None
        return {"id": d.id, "machine": d.machine, "kind": d.kind, "store_type": d.store_type,
                "store_path": d.store_path, "alias": d.alias, "cert_id": d.cert_id,
                "serial": d.serial, "reason": d.reason, "fixed": d.fixed, "job_id": d.job_id,
                "detected_at": iso(d.detected_at), "open": is_open,
                "last_seen": iso(last_seen)}  # fmt: skip

    async def offboarding_get(self, req: dict[str, Any]) -> dict[str, Any]:
        """An offboarding's progress: found, revoked, removed from stores, still pending."""
        user = _required(req, "user")
        async with self.db.session() as s:
            row = await s.get(Offboarding, user)
            if row is None:
                raise RpcError("not_found", f"{user!r} has not been offboarded", 404)
            return await offboarding.progress(s, row)

    def register(self) -> None:
        for op, fn in {
            "certs.history": self.certs_history,
            "certs.locations": self.certs_locations,
            "users.list": self.users_list,
            "users.get": self.users_get,
            "devices.list": self.devices_list,
            "devices.get": self.devices_get,
            "agents.list": self.agents_list,
            "agents.approve": self.agents_approve,
            "agents.discover": self.agents_discover,
            "stores.list": self.stores_list,
            "stores.add": self.stores_add,
            "stores.approve": self.stores_approve,
            "stores.inventory": self.stores_inventory,
            "stores.enroll": self.stores_enroll,
            "jobs.list": self.jobs_list,
            "jobs.get": self.jobs_get,
            "drift.list": self.drift_list,
            "offboarding.get": self.offboarding_get,
        }.items():
            self.rt.rpc(op, fn)
