"""CRL building and publication: entries, reasons, numbering, coalescing and deltas."""

from __future__ import annotations

import subprocess
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from services.issuer import records
from services.issuer.ca import open_hierarchy, select_cas
from services.issuer.crl import CrlEntry, build_crl
from services.issuer.crlpub import CrlPublisher, CrlTiming
from services.issuer.tables import TABLES
from shared import outbox
from shared.clock import FixedClock
from shared.db import Database
from shared.events import CertReleased, CertRevoked
from shared.pki import RevocationReason, render_serial

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cas(tmp_path_factory):
    return open_hierarchy(
        tmp_path_factory.mktemp("keys"), b"crl-test", select_cas(["issuing-ec"]), "http://pki.test"
    )


def test_a_crl_lists_each_serial_with_its_reason_and_invalidity_date(cas, tmp_path: Path) -> None:
    entries = [
        CrlEntry(
            0x1234ABCD5678,
            NOW - timedelta(hours=1),
            RevocationReason.KEY_COMPROMISE,
            NOW - timedelta(days=2),
        ),
        CrlEntry(0x42, NOW, RevocationReason.CESSATION_OF_OPERATION),
        CrlEntry(0x43, NOW),
    ]
    crl = build_crl(
        cas.get("issuing-ec"), entries, 7, NOW, NOW + timedelta(days=1), "http://pki.test"
    )
    assert crl.is_signature_valid(cas.get("issuing-ec").certificate.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == cas.get("issuing-ec").ski().digest
    first = crl.get_revoked_certificate_by_serial_number(0x1234ABCD5678)
    assert (
        first.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    assert first.extensions.get_extension_for_class(
        x509.InvalidityDate
    ).value.invalidity_date_utc == NOW - timedelta(days=2)
    unspecified = crl.get_revoked_certificate_by_serial_number(0x43)
    assert len(unspecified.extensions) == 0
    (tmp_path / "crl.der").write_bytes(crl.public_bytes(Encoding.DER))
    text = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(tmp_path / "crl.der"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "1234ABCD5678" in text and "Key Compromise" in text and "Cessation Of Operation" in text


def test_openssl_verifies_the_crl_signature_with_the_issuing_ca(cas, tmp_path: Path) -> None:
    crl = build_crl(cas.get("issuing-ec"), [], 1, NOW, NOW + timedelta(days=1), "http://pki.test")
    (tmp_path / "crl.der").write_bytes(crl.public_bytes(Encoding.DER))
    (tmp_path / "ca.pem").write_bytes(cas.get("issuing-ec").certificate.public_bytes(Encoding.PEM))
    result = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem", "-noout"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "verify OK" in result.stderr + result.stdout


def test_a_delta_crl_is_marked_with_its_base_and_critical(cas) -> None:
    crl = build_crl(
        cas.get("issuing-ec"),
        [CrlEntry(5, NOW, RevocationReason.REMOVE_FROM_CRL)],
        9,
        NOW,
        NOW + timedelta(days=1),
        "http://pki.test",
        delta_of=8,
    )
    indicator = crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical and indicator.value.crl_number == 8
    entry = crl.get_revoked_certificate_by_serial_number(5)
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.remove_from_crl
    )


def test_a_full_crl_points_at_its_delta(cas) -> None:
    crl = build_crl(cas.get("issuing-ec"), [], 1, NOW, NOW + timedelta(days=1), "http://pki.test")
    [point] = crl.extensions.get_extension_for_class(x509.FreshestCRL).value
    assert point.full_name[0].value == "http://pki.test/crl/issuing-ec-delta.crl"


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, name: str, data: bytes) -> None:
        self.objects[name] = data


class Recorder:
    """A unit of work over a real database that records the events it would publish."""

    def __init__(self, db: Database) -> None:
        self.db, self.events = db, []

    @asynccontextmanager
    async def __call__(self):
        async with self.db.transaction() as session:
            uow = _Uow(session, self.events)
            yield uow


class _Uow:
    def __init__(self, session, sink) -> None:
        self.session, self._sink = session, sink

    def emit(self, *events) -> None:
        self._sink.extend(events)


@pytest.fixture
async def publisher(cas, tmp_path: Path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'crl.db'}")
    await db.create_all(tables=[*TABLES, outbox.OutboxMessage.__table__])
    uow = Recorder(db)
    pub = CrlPublisher(cas, uow, MemoryStore(), "http://pki.test", CrlTiming())
    pub.recorder = uow  # type: ignore[attr-defined]
    yield pub
    await db.dispose()


def revoked(serial: int, reason=RevocationReason.SUPERSEDED) -> CertRevoked:
    return CertRevoked(
        cert_id=f"c{serial}",
        serial=render_serial(serial),
        issuer_ca="issuing-ec",
        reason=reason,
        comment="test",
        revoked_at=NOW,
    )


async def test_crl_numbers_grow_and_a_repeated_revocation_changes_nothing(publisher) -> None:
    await publisher.publish_due()
    async with publisher.recorder() as uow:
        await records.record_revocations(
            uow.session, [revoked(1), revoked(2), revoked(1)], {"issuing-ec"}
        )
    async with publisher.recorder() as uow:
        assert await records.record_revocations(uow.session, [revoked(2)], {"issuing-ec"}) == 0
    events = await publisher.publish_due()
    full = [e for e in events if e.ca == "issuing-ec" and not e.delta]
    assert [e.entries for e in full] == [2]
    numbers = [e.crl_number for e in publisher.published if e.ca == "issuing-ec"]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert await publisher.publish_due() == []


async def test_a_released_hold_leaves_the_full_crl_and_is_removed_in_the_delta(publisher) -> None:
    await publisher.publish_due()
    async with publisher.recorder() as uow:
        await records.record_revocations(
            uow.session,
            [revoked(10, RevocationReason.CERTIFICATE_HOLD), revoked(11)],
            {"issuing-ec"},
        )
    await publisher.publish_due()
    async with publisher.recorder() as uow:
        released = CertReleased(cert_id="c10", serial=render_serial(10), issuer_ca="issuing-ec")
        assert await records.record_releases(uow.session, [released, released], {"issuing-ec"}) == 1
    events = {e.delta: e for e in await publisher.publish_due() if e.ca == "issuing-ec"}
    store = publisher._store.objects  # noqa: SLF001
    full = x509.load_der_x509_crl(store[events[False].object_name])
    delta = x509.load_der_x509_crl(store[events[True].object_name])
    assert [r.serial_number for r in full] == [11]
    assert events[True].object_name == f"issuing-ec/delta-{events[True].crl_number}.crl"
    assert events[True].base_crl_number is not None
    removed = delta.get_revoked_certificate_by_serial_number(10)
    assert (
        removed.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.remove_from_crl
    )
    assert (
        delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number
        == events[True].base_crl_number
    )


async def test_crls_are_regenerated_on_schedule_well_before_next_update(
    cas, tmp_path: Path
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'schedule.db'}")
    await db.create_all(tables=[*TABLES, outbox.OutboxMessage.__table__])
    clock = FixedClock(NOW)
    timing = CrlTiming(validity=timedelta(hours=24), refresh=timedelta(hours=6))
    pub = CrlPublisher(cas, Recorder(db), MemoryStore(), "http://pki.test", timing, clock)
    first = [e for e in await pub.publish_due() if e.ca == "issuing-ec" and not e.delta]
    assert first[0].next_update - first[0].this_update == timedelta(hours=24)
    clock.advance(timedelta(hours=5))
    assert await pub.publish_due() == []
    clock.advance(timedelta(hours=1))
    again = [e for e in await pub.publish_due() if e.ca == "issuing-ec" and not e.delta]
    assert again and again[0].crl_number > first[0].crl_number
    assert again[0].this_update < first[0].next_update
    await db.dispose()
