"""Renewal of installed certificates, wherever they live.

A renewal keeps the subject, SANs, template and key type and makes a new key on the machine
that holds the certificate: for each place the old certificate is installed, that machine's
agent gets a re-enrollment job (the key never leaves it); the issuer signs the CSR and links
the two (``cert.renewed``); the agent installs the new certificate under the same alias; once
the new certificates are in every place the old one was, the old one is revoked as
``superseded``.

Each (certificate, place) is one :class:`Renewal` row whose request id is derived from them:
asking again (a second click, a replica, a restart half-way through a campaign) sends nothing
twice and resumes what was not sent. The rows are the campaign's progress: planned → issued →
installed, or failed with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.inventory import catalog, jobs
from services.inventory.tables import Certificate, Job, Location, ProvisioningRequest, Renewal
from services.inventory.timeutil import as_utc, iso
from shared.clock import utcnow
from shared.events import (
    AgentJob,
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


@dataclass(frozen=True)
class Skipped:
    cert_id: str
    reason: str


def agent_key_type(cert: Certificate) -> str | None:
    return AGENT_KEY_TYPES.get((cert.key_type or "", cert.key_size or 0))


async def plan(
    session: AsyncSession, certs: list[Certificate]
) -> tuple[list[Planned], list[Skipped]]:
    """What renewing these certificates means: one re-enrollment per place each is installed."""
    planned: list[Planned] = []
    skipped: list[Skipped] = []
    for cert in certs:
        why = await _not_renewable(session, cert)
        if why:
            skipped.append(Skipped(cert.cert_id, why))
            continue
        places = await catalog.active_locations(session, cert.cert_id)
        if not places:
            skipped.append(
                Skipped(
                    cert.cert_id,
                    "not installed in any store an agent manages; renew it with its own key "
                    "over the API (POST /v1/enroll/renew)",
                )
            )
            continue
        key_type = agent_key_type(cert)
        assert key_type is not None and cert.template is not None
        for loc in places:
            planned.append(
                Planned(
                    cert_id=cert.cert_id,
                    request_id=request_id_for(cert.cert_id, loc),
                    machine=loc.machine,
                    store_type=loc.store_type,
                    store_path=loc.store_path,
                    alias=loc.alias,
                    key_type=key_type,
                    template=cert.template,
                )
            )
    return planned, skipped


def request_id_for(cert_id: str, loc: Location) -> str:
    return derived_id("renewal", cert_id, loc.machine, loc.store_path, loc.alias)


async def _not_renewable(session: AsyncSession, cert: Certificate) -> str | None:
    if cert.source != "issued":
        return "not issued by certbus (found in a store); its own CA must renew it"
    if cert.status == "revoked":
        return f"revoked ({cert.revocation_reason})"
    if not cert.template or not cert.subject_dn:
        return "the catalog does not know its template and subject"
    if agent_key_type(cert) is None:
        return f"agents cannot make a {cert.key_type} key of {cert.key_size} bits"
    done = (
        await session.exec(
            select(Renewal.new_cert_id).where(
                Renewal.old_cert_id == cert.cert_id,
                Renewal.new_cert_id.is_not(None),  # type: ignore[union-attr]
            )
        )
    ).first()
    if done:
        return f"already renewed as {done}"
    return None


async def start(
    session: AsyncSession, cause: Event, planned: list[Planned], reason: str | None = None
) -> list[AgentJob]:
    """Record each planned renewal and send its job; what was sent before is not sent again."""
    out: list[AgentJob] = []
    for p in planned:
        row = await session.get(Renewal, p.request_id)
        if row is not None and row.status not in ("failed",):
            continue
        cert = await session.get(Certificate, p.cert_id)
        assert cert is not None
        attempt = 0 if row is None else row.attempt + 1
        if row is None:
            row = Renewal(request_id=p.request_id, old_cert_id=p.cert_id, machine=p.machine,
                          store_type=p.store_type, store_path=p.store_path, alias=p.alias,
                          reason=reason or "renewal")  # fmt: skip
            session.add(row)
        row.status, row.error, row.attempt, row.updated_at = "planned", None, attempt, utcnow()
        target = StoreTarget(
            machine=p.machine,
            store_type=p.store_type,
            store_path=p.store_path,
            alias=p.alias,  # type: ignore[arg-type]
        )
        request_id = p.request_id if attempt == 0 else derived_id(p.request_id, str(attempt))
        row.current_request_id = request_id
        job = await jobs.send(
            session,
            cause,
            job_id=derived_id("job", request_id, "reenroll"),
            machine=p.machine,
            kind=JobKind.REENROLL,
            target=target,
            request_id=request_id,
            template=p.template,
            subject_dn=cert.subject_dn,
            sans=list(cert.sans),
            key_type=p.key_type,
            owner=cert.owner,
            renewal_of=cert.cert_id,
        )
        if job:
            out.append(job)
    return out


async def _by_request(session: AsyncSession, request_id: str) -> Renewal | None:
    return (
        await session.exec(select(Renewal).where(Renewal.current_request_id == request_id))
    ).first()


async def issued(session: AsyncSession, ev: CertIssued) -> None:
    """A renewal's certificate exists: link it, and let what pointed at the old one follow."""
    row = await _by_request(session, ev.request_id)
    if row is None:
        return
    if row.status == "planned":
        row.status, row.new_cert_id, row.updated_at = "issued", ev.cert_id, utcnow()
    for request in (
        await session.exec(
            select(ProvisioningRequest).where(ProvisioningRequest.cert_id == row.old_cert_id)
        )
    ).all():
        if request.device == row.machine:
            request.cert_id = ev.cert_id


async def rejected(session: AsyncSession, ev: CertRejected) -> None:
    row = await _by_request(session, ev.request_id)
    if row is not None and row.status in OPEN:
        row.status, row.error, row.updated_at = "failed", f"{ev.code}: {ev.message}", utcnow()


async def job_failed(session: AsyncSession, job_id: str, error: str) -> None:
    job = await session.get(Job, job_id)
    if job is None or not job.request_id:
        return
    row = await _by_request(session, job.request_id)
    if row is not None and row.status == "planned":
        row.status, row.error, row.updated_at = "failed", error, utcnow()


async def installed(session: AsyncSession, ev: CertInstalled) -> list[Event]:
    """The new certificate is in the old one's place; once it is in all of them, the old one is
    revoked as superseded."""
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
    if row is None or row.status == "installed":
        return []
    row.status, row.updated_at = "installed", utcnow()
    await session.flush()
    siblings = (
        await session.exec(select(Renewal).where(Renewal.old_cert_id == row.old_cert_id))
    ).all()
    if any(r.status != "installed" for r in siblings):
        return []
    old = await session.get(Certificate, row.old_cert_id)
    if old is None or old.status == "revoked":
        return []
    new_ids = sorted({r.new_cert_id for r in siblings if r.new_cert_id})
    return [
        ev.caused(
            CertRevocationRequested,
            event_id=derived_id("renewal.superseded", row.old_cert_id),
            cert_ids=[row.old_cert_id],
            reason=RevocationReason.SUPERSEDED,
            comment=f"renewed as {', '.join(new_ids)} and replaced in every store",
        )
    ]


async def due(
    session: AsyncSession, before_days: int, now: datetime, limit: int
) -> list[Certificate]:
    """Installed certificates of certbus's, not renewed yet, that expire within
    ``before_days`` — or within the last third of their life, if that is shorter (a
    certificate valid for less than ``before_days`` is not renewed the moment it exists)."""
    located = select(Location.cert_id).where(Location.active)
    renewing = select(Renewal.old_cert_id)
    candidates = (
        await session.exec(
            select(Certificate.cert_id, Certificate.not_before, Certificate.not_after)
            .where(
                Certificate.status == "active",
                Certificate.source == "issued",
                Certificate.not_after > now,  # type: ignore[operator]
                Certificate.not_after <= now + timedelta(days=before_days),  # type: ignore[operator]
                col(Certificate.cert_id).in_(located),
                col(Certificate.cert_id).not_in(renewing),
            )
            .order_by(Certificate.not_after)
        )
    ).all()
    chosen = []
    for cert_id, not_before, not_after in candidates:
        start, end = as_utc(not_before), as_utc(not_after)
        assert end is not None
        if (
            start is None
            or end - now <= (end - start) / 3
            or end - start > 3 * timedelta(days=before_days)
        ):
            chosen.append(cert_id)
        if len(chosen) >= limit:
            break
    if not chosen:
        return []
    rows = await session.exec(
        select(Certificate)
        .where(col(Certificate.cert_id).in_(chosen))
        .order_by(Certificate.not_after)
    )
    return list(rows.all())


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
    return asdict(p)


def skipped_json(s: Skipped) -> dict[str, Any]:
    return asdict(s)
