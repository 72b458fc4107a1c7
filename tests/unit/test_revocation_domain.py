"""The revocation domain on SQLite, without a bus: who is affected, and what revoking twice does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.revocation import fanout, offboarding, projection, revoker
from services.revocation.crls import caching_headers
from services.revocation.models import TABLES, StoredCrl
from shared.db import Database
from shared.events import CertInstalled, KeyCompromised, StoreTarget, UserOffboarded
from shared.outbox import OutboxMessage
from shared.pki import RevocationReason
from shared.testing.revocation_kit import LabCa


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'revocation.db'}")
    await database.create_all(tables=[*TABLES, OutboxMessage.__table__])
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
def ca() -> LabCa:
    return LabCa("corp")


def order(reason: RevocationReason = RevocationReason.KEY_COMPROMISE, cause: str = "api-1"):  # type: ignore[no-untyped-def]
    return revoker.RevocationOrder(
        reason=reason, comment="lost laptop", cause=cause, correlation_id="corr-1"
    )


async def test_revoking_twice_reports_the_first_revocation(db: Database, ca: LabCa) -> None:
    async with db.transaction() as s:
        cert = await projection.record_issued(s, ca.issued_event("alice", owner="alice"))
        first = await revoker.revoke(s, [cert], order())
        second = await revoker.revoke(s, [cert], order(RevocationReason.SUPERSEDED, cause="api-2"))
    assert [o.status for o in first.outcomes] == ["revoked"]
    assert len(first.events) == 1 and first.events[0].reason == RevocationReason.KEY_COMPROMISE
    assert [o.status for o in second.outcomes] == ["already_revoked"]
    assert second.events == []
    assert second.outcomes[0].revocation["reason"] == "keyCompromise"


async def test_a_hold_can_be_released_but_other_reasons_are_final(db: Database, ca: LabCa) -> None:
    async with db.transaction() as s:
        held = await projection.record_issued(s, ca.issued_event("held", owner="x"))
        final = await projection.record_issued(s, ca.issued_event("final", owner="x"))
        await revoker.revoke(s, [held], order(RevocationReason.CERTIFICATE_HOLD))
        await revoker.revoke(s, [final], order(RevocationReason.SUPERSEDED))
        released, event = await revoker.release(s, held, "found it", "corr-2", "admin")
        refused, none = await revoker.release(s, final, "please", "corr-3", "admin")
        again = await revoker.revoke(s, [held], order(RevocationReason.CERTIFICATE_HOLD, "api-3"))
    assert released["status"] == "released" and event is not None and event.serial == held.serial
    assert refused["status"] == "final" and none is None
    assert [o.status for o in again.outcomes] == ["revoked"]


async def test_offboarding_finds_owned_certificates_and_those_on_the_users_devices(
    db: Database, ca: LabCa
) -> None:
    async with db.transaction() as s:
        await projection.assign_devices(s, "alice", ["alice-pc"])
        owned = await projection.record_issued(s, ca.issued_event("alice", owner="alice"))
        for_device = await projection.record_issued(s, ca.issued_event("pc", device="alice-pc"))
        on_device = ca.issued_event("vpn", owner="svc")
        await projection.record_issued(s, on_device)
        await projection.record_installed(
            s,
            CertInstalled(
                cert_id=on_device.cert_id,
                serial=on_device.serial,
                thumbprint_sha256=on_device.thumbprint_sha256,
                target=StoreTarget(machine="alice-pc", store_path="/s", alias="vpn"),
            ),
        )
        await projection.record_issued(s, ca.issued_event("bob", owner="bob"))
        result = await offboarding.offboard(s, UserOffboarded(user="alice"))
    assert sorted(e.cert_id for e in result.events) == sorted(
        [owned.cert_id, for_device.cert_id, on_device.cert_id]
    )
    assert {e.reason for e in result.events} == {RevocationReason.CESSATION_OF_OPERATION}


async def test_a_certificate_is_found_by_id_serial_with_colons_or_thumbprint(
    db: Database, ca: LabCa
) -> None:
    ev = ca.issued_event("alice", owner="alice")
    async with db.transaction() as s:
        await projection.record_issued(s, ev)
        colons = ":".join(
            ev.serial.zfill(len(ev.serial) + len(ev.serial) % 2)[i : i + 2]
            for i in range(0, len(ev.serial) + len(ev.serial) % 2, 2)
        )
        for ident in (
            ev.cert_id,
            ev.serial,
            colons.upper(),
            ev.thumbprint_sha1,
            ev.thumbprint_sha256.upper(),
        ):
            found = await projection.find_certificate(s, ident)
            assert found is not None and found.cert_id == ev.cert_id, ident
        assert await projection.find_certificate(s, "nothing-like-this") is None


def test_a_crl_is_cached_no_longer_than_until_its_next_update() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    crl = StoredCrl(
        ca="c",
        delta=False,
        crl_number=1,
        der=b"",
        sha256="ab",
        this_update=now,
        next_update=now + timedelta(seconds=90),
        stored_at=now,
    )
    assert "max-age=90" in caching_headers(crl, 300, now)["Cache-Control"]
    assert "max-age=300" in caching_headers(crl, 300, now - timedelta(hours=1))["Cache-Control"]
    assert "max-age=0" in caching_headers(crl, 300, now + timedelta(days=1))["Cache-Control"]


async def test_a_batch_of_offboardings_revokes_what_each_one_would(db: Database, ca: LabCa) -> None:
    async with db.transaction() as s:
        await projection.assign_devices(s, "ann", ["ann-pc"])
        await projection.assign_devices(s, "ben", ["ben-pc"])
        anns = await projection.record_issued(s, ca.issued_event("ann", owner="ann"))
        on_bens_pc = await projection.record_issued(s, ca.issued_event("pc", device="ben-pc"))
        shared_cert = ca.issued_event("shared", owner="ann")
        await projection.record_issued(s, shared_cert)
        await projection.record_installed(
            s,
            CertInstalled(
                cert_id=shared_cert.cert_id,
                serial=shared_cert.serial,
                thumbprint_sha256=shared_cert.thumbprint_sha256,
                target=StoreTarget(machine="ben-pc", store_path="/s", alias="x"),
            ),
        )
        await projection.record_issued(s, ca.issued_event("cid", owner="cid"))
        leaving = [
            UserOffboarded(user="ann"),
            UserOffboarded(user="ben"),
            UserOffboarded(user="ann"),
            UserOffboarded(user="cid", mode="disable"),
        ]
        first = await offboarding.offboard_many(s, leaving)
        again = await offboarding.offboard_many(s, leaving)
    assert sorted(e.cert_id for e in first.events) == sorted(
        [anns.cert_id, on_bens_pc.cert_id, shared_cert.cert_id]
    )
    assert again.events == []


async def test_the_batch_prefilters_find_leavers_and_compromised_keys(
    db: Database, ca: LabCa
) -> None:
    async with db.transaction() as s:
        await projection.assign_devices(s, "dora", ["dora-pc"])
        await offboarding.offboard_many(s, [UserOffboarded(user="dora")])
        batch = [
            ca.issued_event("a", owner="dora"),
            ca.issued_event("b", device="dora-pc"),
            ca.issued_event("c", owner="eve"),
        ]
        certs = await projection.record_issued_many(s, [*batch, batch[0]])
        leavers = await offboarding.possibly_offboarded(s, certs[:3])
        assert await fanout.possibly_compromised(s, certs[:3]) == []
        await fanout.key_compromised(
            s, KeyCompromised(public_key_sha256=batch[2].public_key_sha256)
        )
        compromised = await fanout.possibly_compromised(s, certs[:3])
    assert [c.cert_id for c in leavers] == [batch[0].cert_id, batch[1].cert_id]
    assert len(compromised) == 3  # the test CA's leaves share one key
    assert len({c.cert_id for c in certs}) == 3
