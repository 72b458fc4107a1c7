"""Store inventories against what inventory expects, on a real SQLite database: drift is raised
once per occurrence, fixed with a job of its own, and written into the certificate's history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlmodel import select

from services.inventory import catalog, drift, provisioning, stores
from services.inventory.policy import parse
from services.inventory.tables import TABLES, CertificateEvent, Drift, Job, Location, Store
from shared import pki
from shared.clock import utcnow
from shared.db import Database
from shared.events import (
    AgentJob,
    AgentJobCompleted,
    CertDriftDetected,
    CertRevoked,
    Event,
    JobKind,
    StoreTarget,
)
from shared.pki import RevocationReason

MACHINE = "web-01"
STORE = StoreTarget(machine=MACHINE, store_type="pem", store_path="etc/ssl", alias="-")
FIXING = parse({"drift": {"auto_fix": True}})
WATCHING = parse({"drift": {"auto_fix": False}})


@pytest.fixture
async def db(tmp_path: Any) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}")
    await database.create_all(tables=TABLES)
    yield database
    await database.dispose()


def certificate(cn: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = utcnow()
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=9))
            .sign(key, hashes.SHA256()))  # fmt: skip


def issued(cert: x509.Certificate, cert_id: str, owner: str) -> Any:
    row = catalog.from_x509(cert, cert_id=cert_id, owner=owner)
    row.source = "issued"
    return row


def entry(cert: x509.Certificate, alias: str) -> dict[str, Any]:
    return {
        "alias": alias,
        "serial": pki.render_serial(cert.serial_number),
        "thumbprint_sha256": pki.thumbprint(cert),
        "certificate_pem": pki.pem(cert),
    }


_reports = iter(range(1, 1000))


def report(*entries: dict[str, Any]) -> AgentJobCompleted:
    """What the agent answers to one more inventory job of the store, now."""
    return AgentJobCompleted(
        job_id=f"inventory-{next(_reports)}", machine=MACHINE, kind=JobKind.INVENTORY,
        result={"store": STORE.model_dump(), "entries": list(entries)},
    )  # fmt: skip


async def reconcile(db: Database, ev: AgentJobCompleted, policy: Any = WATCHING) -> list[Event]:
    async with db.transaction() as s:
        return await drift.reconcile(s, policy, ev)


def drifts(events: list[Event]) -> list[CertDriftDetected]:
    return [e for e in events if isinstance(e, CertDriftDetected)]


async def history(db: Database, cert_id: str) -> list[CertificateEvent]:
    async with db.session() as s:
        query = select(CertificateEvent).where(CertificateEvent.cert_id == cert_id)
        return list((await s.exec(query.order_by(CertificateEvent.occurred_at))).all())  # type: ignore[arg-type]


async def rows(db: Database, table: Any) -> list[Any]:
    async with db.session() as s:
        return list((await s.exec(select(table))).all())


async def test_a_foreign_certificate_is_one_drift_while_it_stays_and_a_new_one_when_it_returns(
    db: Database,
) -> None:
    legacy = certificate("legacy.example.com")

    (first,) = drifts(await reconcile(db, report(entry(legacy, "legacy"))))
    assert (first.kind, first.reason) == ("unexpected", "not issued by certbus")
    assert drifts(await reconcile(db, report(entry(legacy, "legacy")))) == []
    assert drifts(await reconcile(db, report(entry(legacy, "legacy")))) == []

    # Somebody deleted it: that ends the drift, and its leaving is no "missing" drift.
    assert await reconcile(db, report()) == []
    assert drifts(await reconcile(db, report())) == []

    # It is back: a new occurrence, raised anew.
    (again,) = drifts(await reconcile(db, report(entry(legacy, "legacy"))))
    assert again.event_id != first.event_id and again.cert_id == first.cert_id
    assert len(await rows(db, Drift)) == 2

    subjects = [(h.subject, h.details.get("seen_by")) for h in await history(db, first.cert_id)]
    assert subjects == [
        ("cert.installed", "inventory"), ("cert.drift.detected", None),
        ("cert.removed", "inventory"),
        ("cert.installed", "inventory"), ("cert.drift.detected", None),
    ]  # fmt: skip


async def test_the_same_certificate_under_two_aliases_is_two_drifts(db: Database) -> None:
    legacy = certificate("legacy.example.com")
    found = drifts(await reconcile(db, report(entry(legacy, "a"), entry(legacy, "b"))))
    assert sorted(d.target.alias for d in found) == ["a", "b"]
    assert drifts(await reconcile(db, report(entry(legacy, "a"), entry(legacy, "b")))) == []


async def _revoked_and_removed(db: Database, cert: x509.Certificate) -> tuple[str, str]:
    """A certbus certificate that was installed, revoked and removed (the revocation's remove
    job recorded); returns its id and that job's id."""
    row = issued(cert, "cert-1", "alice")
    target = STORE.model_copy(update={"alias": "alice"})
    then = utcnow() - timedelta(hours=1)
    async with db.transaction() as s:
        s.add(row)
        s.add(Location(cert_id=row.cert_id, machine=MACHINE, store_path=STORE.store_path,
                       alias="alice", installed_at=then - timedelta(hours=1), active=False,
                       removed_at=then))  # fmt: skip
        await stores.record_store(s, STORE, source="policy")
        revoked = CertRevoked(
            cert_id=row.cert_id, serial=row.serial, issuer_ca="test-ca", owner="alice",
            reason=RevocationReason.KEY_COMPROMISE, comment="lost laptop", revoked_at=then,
        )  # fmt: skip
        await catalog.record_revoked(s, revoked)
        job = await provisioning.remove_job(s, revoked, row, target)
        assert job is not None
    return row.cert_id, job.job_id


async def test_a_revoked_certificate_back_in_its_store_is_removed_by_a_job_of_its_own(
    db: Database,
) -> None:
    cert = certificate("alice")
    cert_id, revocation_job = await _revoked_and_removed(db, cert)

    events = await reconcile(db, report(entry(cert, "alice")), FIXING)
    (detected,) = drifts(events)
    (fix,) = [e for e in events if isinstance(e, AgentJob)]
    assert fix.kind == JobKind.REMOVE and fix.job_id != revocation_job
    assert (fix.cert_id, fix.target and fix.target.alias) == (cert_id, "alice")
    assert (detected.fixed, detected.job_id) == (True, fix.job_id)
    assert detected.reason == "revoked (keyCompromise)"
    (row,) = await rows(db, Drift)
    assert (row.fixed, row.job_id) == (True, fix.job_id)
    assert {j.job_id for j in await rows(db, Job)} == {revocation_job, fix.job_id}

    # Found again before the agent ran the fix: the same drift, no second job.
    assert await reconcile(db, report(entry(cert, "alice")), FIXING) == []
    assert len(await rows(db, Job)) == 2

    # Gone, then back once more: a new drift and a new job.
    await reconcile(db, report(), FIXING)
    events = await reconcile(db, report(entry(cert, "alice")), FIXING)
    (second,) = [e for e in events if isinstance(e, AgentJob)]
    assert second.job_id not in (revocation_job, fix.job_id)


async def test_without_auto_fix_a_revoked_certificate_found_is_recorded_and_left(
    db: Database,
) -> None:
    cert = certificate("alice")
    cert_id, _ = await _revoked_and_removed(db, cert)
    events = await reconcile(db, report(entry(cert, "alice")))
    assert [type(e) for e in events] == [CertDriftDetected]
    (row,) = await rows(db, Drift)
    assert (row.cert_id, row.fixed, row.job_id) == (cert_id, False, None)
    assert len(await rows(db, Job)) == 1  # only the revocation's
    loc = next(x for x in await rows(db, Location) if x.cert_id == cert_id)
    assert loc.active and drift.is_open(row, loc)


async def test_a_missing_certificate_is_one_drift_and_one_installed_after_the_report_is_not(
    db: Database,
) -> None:
    cert = certificate("bob")
    async with db.transaction() as s:
        s.add(issued(cert, "cert-b", "bob"))
        s.add(Location(cert_id="cert-b", machine=MACHINE, store_path=STORE.store_path,
                       alias="bob", installed_at=utcnow() - timedelta(hours=1)))  # fmt: skip
    stale = report()
    later = stale.occurred_at + timedelta(seconds=5)
    async with db.transaction() as s:  # installed after the agent made ``stale``
        s.add(Location(cert_id="cert-late", machine=MACHINE, store_path=STORE.store_path,
                       alias="late", installed_at=later))  # fmt: skip

    (missing,) = drifts(await reconcile(db, stale))
    assert (missing.kind, missing.cert_id) == ("missing", "cert-b")
    assert missing.reason == "not in the store"
    assert drifts(await reconcile(db, report())) == []
    (row,) = await rows(db, Drift)
    places = {x.cert_id: x for x in await rows(db, Location)}
    assert not places["cert-b"].active and drift.is_open(row, places["cert-b"])
    assert places["cert-late"].active
    assert [h.subject for h in await history(db, "cert-b")] == [
        "cert.removed", "cert.drift.detected"]  # fmt: skip


async def test_a_store_waiting_for_approval_is_counted_but_not_managed(db: Database) -> None:
    async with db.transaction() as s:
        await stores.record_store(s, STORE, source="discovery", status="discovered")
    legacy = certificate("legacy.example.com")
    assert await reconcile(db, report(entry(legacy, "legacy"))) == []
    (store,) = await rows(db, Store)
    assert (store.status, store.entries) == ("discovered", 1)
    assert await rows(db, Drift) == [] and await rows(db, Location) == []


async def test_a_discovered_store_the_policy_installs_into_becomes_approved(db: Database) -> None:
    async with db.transaction() as s:
        await stores.record_store(s, STORE, source="discovery", status="discovered")
    async with db.transaction() as s:
        await stores.record_store(s, STORE, source="inventory")
    assert [r.status for r in await rows(db, Store)] == ["discovered"]
    async with db.transaction() as s:
        await stores.record_store(s, STORE, source="policy")
    assert [r.status for r in await rows(db, Store)] == ["approved"]
