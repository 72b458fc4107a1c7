"""Renewal of installed certificates, wherever they live.

A renewal keeps the subject, SANs, template and key type and makes a new key on the machine
that holds the certificate: for each place the old certificate is installed, that machine's
agent gets a re-enrollment job (the key never leaves it); the issuer signs the CSR and links
the two (``cert.renewed``); the agent installs the new certificate under the same alias; once
the new certificates are in every place the old one was, the old one is revoked as
``superseded``.

Each (certificate, place) is one :class:`Renewal` row whose request id is derived from them:
asking again (a second click, a replica, a restart half-way through a campaign) sends nothing
twice and resumes what was not sent; a place that failed is tried again, under a new request
id. The rows are the campaign's progress: planned → issued → installed, or failed (with the
reason) or cancelled (the old certificate was revoked, or left that place, meanwhile).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory import catalog, jobs
from services.inventory.tables import (
    Agent,
    Certificate,
    Job,
    Location,
    ProvisioningRequest,
    Renewal,
    User,
)
from services.inventory.timeutil import as_utc, iso
from shared.clock import utcnow
from shared.events import (
    CertInstalled,
    CertIssued,
    CertRejected,
    CertRevocationRequested,
    Event,
    JobKind,
    StoreTarget,
    derived_id,
)
from shared.pki import RevocationReason

AGENT_KEY_TYPES = {
    ("RSA", 2048): "rsa-2048",
    ("RSA", 3072): "rsa-3072",
    ("RSA", 4096): "rsa-4096",
    ("EC-secp256r1", 256): "ec-p256",
    ("EC-secp384r1", 384): "ec-p384",
    ("EC-secp521r1", 521): "ec-p521",
    ("Ed25519", 256): "ed25519",
}
"""The catalog's key description → the key an agent makes for the renewal."""

OPEN = ("planned", "issued")
MAX_AUTOMATIC_ATTEMPTS = 5


@dataclass(frozen=True)
class Planned:
    cert_id: str
    request_id: str
    machine: str
    store_type: str
    store_path: str
    alias: str
    key_type: str
    template: str
    target: dict[str, Any] = field(default_factory=dict)
    server_key: bool = False


@dataclass(frozen=True)
class Skipped:
    cert_id: str
    reason: str


def agent_key_type(cert: Certificate) -> str | None:
    return AGENT_KEY_TYPES.get((cert.key_type or "", cert.key_size or 0))


def request_id_for(cert_id: str, loc: Location) -> str:
    return derived_id("renewal", cert_id, loc.machine, loc.store_path, loc.alias)


async def plan(
    session: AsyncSession, certs: list[Certificate]
) -> tuple[list[Planned], list[Skipped]]:
    """What renewing these certificates means: one re-enrollment per place each is installed
    (and not already being renewed there)."""
    planned: list[Planned] = []
    skipped: list[Skipped] = []
    for cert in certs:
        why = _not_renewable(cert) or await _owner_gone(session, cert)
        if why:
            skipped.append(Skipped(cert.cert_id, why))
            continue
        places = await catalog.active_locations(session, cert.cert_id)
        if not places:
            skipped.append(Skipped(cert.cert_id, await _why_nowhere(session, cert)))
            continue
        key_type = agent_key_type(cert)
        assert key_type is not None and cert.template is not None
        for loc in places:
            request_id = request_id_for(cert.cert_id, loc)
            row = await session.get(Renewal, request_id)
            agent = await session.get(Agent, loc.machine)
            if row is not None and row.status not in ("failed", "cancelled"):
                skipped.append(Skipped(cert.cert_id, f"{_place(loc)}: renewal {row.status}"))
            elif agent is not None and agent.status != "approved":
                skipped.append(Skipped(cert.cert_id, f"{_place(loc)}: the agent is {agent.status}"))
            else:
                target = await _target(session, cert, loc)
                planned.append(
                    Planned(
                        cert_id=cert.cert_id, request_id=request_id, machine=loc.machine,
                        store_type=loc.store_type, store_path=loc.store_path, alias=loc.alias,
                        key_type=key_type, template=cert.template, target=target,
                        server_key=await _server_made(session, cert),
                    )
                )  # fmt: skip
    return planned, skipped


def _place(loc: Location) -> str:
    return f"{loc.machine}:{loc.store_path} ({loc.alias})"


def _not_renewable(cert: Certificate) -> str | None:
    if cert.source != "issued":
        return "not issued by certbus (found in a store); its own CA must renew it"
    if cert.status == "revoked":
        return f"revoked ({cert.revocation_reason})"
    if not cert.template or not cert.subject_dn:
        return "the catalog does not know its template and subject"
    if agent_key_type(cert) is None:
        return f"agents cannot make a {cert.key_type} key of {cert.key_size} bits"
    return None


async def _owner_gone(session: AsyncSession, cert: Certificate) -> str | None:
    """A leaver's certificates are not renewed (in disable mode they are still active)."""
    owner = await session.get(User, cert.owner) if cert.owner else None
    return f"{cert.owner} was offboarded" if owner and owner.status == "offboarded" else None


async def _why_nowhere(session: AsyncSession, cert: Certificate) -> str:
    done = (
        await session.exec(
            select(Renewal.new_cert_id).where(
                Renewal.old_cert_id == cert.cert_id, Renewal.status == "installed"
            )
        )
    ).first()
    if done:
        return f"already renewed as {done}"
    return (
        "not installed in any store an agent manages; renew it with its own key "
        "over the API (POST /v1/enroll/renew)"
    )


async def _server_made(session: AsyncSession, cert: Certificate) -> bool:
    """Whether the issuer made this certificate's key (policy ``key: server``): the agent said
    so when it reported the re-enrollment that installed it. A renewal does the same."""
    if not cert.request_id:
        return False
    job = await session.get(Job, derived_id("job", cert.request_id, "reenroll"))
    return bool(job and job.result and job.result.get("key_generation") == "server")


async def _target(session: AsyncSession, cert: Certificate, loc: Location) -> dict[str, Any]:
    """The place as the install job named it (with any PEM file names), else as recorded."""
    place = {"machine": loc.machine, "store_path": loc.store_path, "alias": loc.alias}
    install = await session.get(Job, derived_id("job", cert.cert_id, "add"))
    if install is not None and install.target:
        if all(install.target.get(k) == v for k, v in place.items()):
            return dict(install.target)
    return {**place, "store_type": loc.store_type}


async def start(
    session: AsyncSession, cause: Event, planned: list[Planned], reason: str | None = None
) -> list[Event]:
    """Record each planned renewal and send its job; what was sent before is not sent again.
    A place tried before and failed gets a new request (a certificate it left issued but not
    installed is revoked)."""
    out: list[Event] = []
    for p in planned:
        row = await session.get(Renewal, p.request_id)
        if row is not None and row.status not in ("failed", "cancelled"):
            continue
        cert = await session.get(Certificate, p.cert_id)
        assert cert is not None
        if row is None:
            row = Renewal(request_id=p.request_id, old_cert_id=p.cert_id, machine=p.machine,
                          store_type=p.store_type, store_path=p.store_path, alias=p.alias,
                          reason=reason or "renewal")  # fmt: skip
            session.add(row)
        else:
            row.attempt += 1
            if row.new_cert_id:
                out.append(_revoke_unused(cause, row, "the renewal was tried again"))
                row.new_cert_id = None
        row.status, row.error, row.updated_at = "planned", None, utcnow()
        attempt = str(row.attempt)
        request_id = p.request_id if row.attempt == 0 else derived_id(p.request_id, attempt)
        row.current_request_id = request_id
        job = await jobs.send(
            session,
            cause,
            job_id=derived_id("job", request_id, "reenroll"),
            machine=p.machine,
            kind=JobKind.REENROLL,
            target=StoreTarget.model_validate({**p.target, "store_type": p.store_type}),
            request_id=request_id,
            template=p.template,
            subject_dn=cert.subject_dn,
            sans=list(cert.sans),
            key_type=p.key_type,
            owner=cert.owner,
            renewal_of=cert.cert_id,
            payload={"key_generation": "server"} if p.server_key else {},
        )
        if job:
            out.append(job)
    return out


def _revoke_unused(cause: Event, row: Renewal, why: str) -> CertRevocationRequested:
    assert row.new_cert_id is not None
    return cause.caused(
        CertRevocationRequested,
        event_id=derived_id("renewal.unused", row.new_cert_id),
        cert_ids=[row.new_cert_id],
        reason=RevocationReason.SUPERSEDED,
        comment=f"renewal of {row.old_cert_id} on {row.machine} ({row.alias}) not used: {why}",
    )


async def _by_request(session: AsyncSession, request_id: str) -> Renewal | None:
    return (
        await session.exec(select(Renewal).where(Renewal.current_request_id == request_id))
    ).first()


async def issued(session: AsyncSession, ev: CertIssued) -> tuple[bool, list[Event]]:
    """A renewal's certificate exists: whether to install it, and what follows. Not a renewal,
    or still wanted: install it. Installed already (a server-made key: the agent installs the
    PKCS#12 it fetched before ``cert.issued`` arrives): finish that place. Cancelled meanwhile
    (the old certificate was revoked or left that place): not installed, and revoked."""
    row = await _by_request(session, ev.request_id)
    if row is None or row.status not in OPEN:
        return True, []
    row.new_cert_id, row.updated_at = ev.cert_id, utcnow()
    if await _at_place(session, ev.cert_id, row) is not None:
        return False, await _finish(session, row, ev)
    old = await session.get(Certificate, row.old_cert_id)
    if old is not None and old.status != "revoked" and await _at_place(session, old.cert_id, row):
        row.status = "issued"
        return True, []
    why = (
        f"{row.old_cert_id} was revoked ({old.revocation_reason})"
        if old is not None and old.status == "revoked"
        else f"{row.old_cert_id} is no longer in that place"
    )
    row.status, row.error = "cancelled", why
    return False, [_revoke_unused(ev, row, why)]


async def _at_place(session: AsyncSession, cert_id: str, row: Renewal) -> int | None:
    found = await session.exec(
        select(Location.id).where(
            Location.cert_id == cert_id, Location.machine == row.machine,
            Location.store_path == row.store_path, Location.alias == row.alias, Location.active,
        )
    )  # fmt: skip
    return found.first()


async def rejected(session: AsyncSession, ev: CertRejected) -> None:
    row = await _by_request(session, ev.request_id)
    if row is not None and row.status in OPEN:
        row.status, row.error, row.updated_at = "failed", f"{ev.code}: {ev.message}", utcnow()


async def job_failed(session: AsyncSession, job_id: str, error: str) -> None:
    """The re-enrollment or the install of a renewal failed: that place can be tried again."""
    job = await session.get(Job, job_id)
    if job is None or not job.request_id:
        return
    row = await _by_request(session, job.request_id)
    if row is not None and row.status in OPEN:
        row.status, row.error, row.updated_at = "failed", error, utcnow()


async def installed(session: AsyncSession, ev: CertInstalled) -> list[Event]:
    """The new certificate is in the old one's place: what pointed at the old one there now
    points at the new one; once it is in all of them, the old one is revoked as superseded."""
    row = (
        await session.exec(
            select(Renewal).where(
                Renewal.new_cert_id == ev.cert_id,
                Renewal.machine == ev.target.machine,
                Renewal.store_path == ev.target.store_path,
                Renewal.alias == ev.target.alias,
            )
        )
    ).first()
    if row is None and ev.job_id:  # installed before its cert.issued came (server-made key)
        job = await session.get(Job, ev.job_id)
        candidate = await _by_request(session, job.request_id) if job and job.request_id else None
        if candidate is not None and candidate.status == "planned":
            candidate.new_cert_id, row = ev.cert_id, candidate
    if row is None or row.status == "installed":
        return []
    return await _finish(session, row, ev)


async def _finish(session: AsyncSession, row: Renewal, ev: Event) -> list[Event]:
    """One place has the new certificate; the last place to get it retires the old one."""
    # Places finishing at once in two transactions (replicas on PostgreSQL) take turns here,
    # so the last one sees every sibling installed and the old one is retired.
    await session.flush()
    old = await session.get(Certificate, row.old_cert_id, with_for_update=True)
    await session.refresh(row)
    if row.status == "installed":
        return []
    row.status, row.updated_at = "installed", utcnow()
    assert row.new_cert_id is not None
    new_cert_id = row.new_cert_id
    out: list[Event] = []
    for request in (
        await session.exec(
            select(ProvisioningRequest).where(
                ProvisioningRequest.cert_id == row.old_cert_id,
                ProvisioningRequest.device == row.machine,
            )
        )
    ).all():
        if request.status == "retired":  # the slot closed while the renewal ran
            out.append(_revoke_unused(ev, row, f"{request.template} was retired meanwhile"))
        else:
            request.cert_id = new_cert_id
    await session.flush()
    siblings = (
        await session.exec(select(Renewal).where(Renewal.old_cert_id == row.old_cert_id))
    ).all()
    if any(r.status in OPEN or r.status == "failed" for r in siblings):
        return out
    if old is None or old.status == "revoked":
        return out
    new_ids = sorted({r.new_cert_id for r in siblings if r.new_cert_id and r.status == "installed"})
    return [
        *out,
        ev.caused(
            CertRevocationRequested,
            event_id=derived_id("renewal.superseded", row.old_cert_id),
            cert_ids=[row.old_cert_id],
            reason=RevocationReason.SUPERSEDED,
            comment=f"renewed as {', '.join(new_ids)} and replaced in every store",
        ),
    ]


async def due(
    session: AsyncSession, before_days: int, now: datetime, limit: int
) -> list[Certificate]:
    """Installed certificates of certbus's, renewable by an agent and not being renewed, that
    expire within ``before_days`` — or within the last third of their life, if that is
    shorter (a certificate valid for less than ``before_days`` is not renewed the moment it
    exists). A renewal that failed is tried again, up to ``MAX_AUTOMATIC_ATTEMPTS`` times."""
    located = select(Location.cert_id).where(Location.active)
    renewing = select(Renewal.old_cert_id).where(
        (col(Renewal.status) != "failed") | (col(Renewal.attempt) >= MAX_AUTOMATIC_ATTEMPTS - 1)
    )
    candidates = (
        await session.exec(
            select(Certificate)
            .where(
                Certificate.status == "active",
                Certificate.source == "issued",
                col(Certificate.template).is_not(None),
                col(Certificate.subject_dn).is_not(None),
                col(Certificate.not_after) > now,
                col(Certificate.not_after) <= now + timedelta(days=before_days),
                col(Certificate.cert_id).in_(located),
                col(Certificate.cert_id).not_in(renewing),
            )
            .order_by(col(Certificate.not_after))
        )
    ).all()
    chosen = []
    for cert in candidates:
        start, end = as_utc(cert.not_before), as_utc(cert.not_after)
        assert end is not None
        late = (
            start is None
            or end - now <= (end - start) / 3
            or end - start > 3 * timedelta(days=before_days)
        )
        if late and agent_key_type(cert) is not None:
            chosen.append(cert)
        if len(chosen) >= limit:
            break
    return chosen


def to_json(row: Renewal) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "old_cert_id": row.old_cert_id,
        "new_cert_id": row.new_cert_id,
        "machine": row.machine,
        "store_type": row.store_type,
        "store_path": row.store_path,
        "alias": row.alias,
        "status": row.status,
        "error": row.error,
        "reason": row.reason,
        "attempt": row.attempt,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def planned_json(p: Planned) -> dict[str, Any]:
    data = asdict(p)
    data.pop("target")
    return data


def skipped_json(s: Skipped) -> dict[str, Any]:
    return asdict(s)
