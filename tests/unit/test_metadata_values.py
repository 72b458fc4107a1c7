"""Metadata values, history and the Compare valve on a real SQLite database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.metadata.tables import TABLES
from services.metadata.values import MetadataValues, UnknownCertificate
from shared.db import Database

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    await database.create_all(tables=TABLES)
    yield database
    await database.dispose()


async def _known(db: Database, cert_id: str = "c1", owner: str | None = "alice") -> None:
    async with db.transaction() as s:
        await MetadataValues(s, NOW).remember_certificate(
            cert_id=cert_id,
            serial="0A1B",
            thumbprint_sha1="AB:CD:" + cert_id,
            thumbprint_sha256="ef" * 32,
            owner=owner,
            event_id="e-" + cert_id,
        )


async def test_a_certificate_is_remembered_once(db) -> None:
    await _known(db)
    async with db.transaction() as s:
        again = await MetadataValues(s, NOW).remember_certificate(
            cert_id="c1",
            serial="0a1b",
            thumbprint_sha1="x",
            thumbprint_sha256="y",
            owner="bob",
            event_id="e2",
        )
    assert again is False
    async with db.session() as s:
        assert await MetadataValues(s, NOW).certificates_of("alice") == ["c1"]


async def test_a_certificate_is_found_by_thumbprint_in_any_spelling_or_by_serial(db) -> None:
    await _known(db)
    async with db.session() as s:
        values = MetadataValues(s, NOW)
        assert await values.resolve(thumbprint="ab:cd:C1") == "c1"
        assert await values.resolve(thumbprint="EF" * 32) == "c1"
        assert await values.resolve(cert_id="0a1b") == "c1"
        with pytest.raises(UnknownCertificate):
            await values.resolve(thumbprint="00" * 20)


async def test_setting_a_value_records_old_and_new_and_setting_it_again_changes_nothing(db) -> None:
    await _known(db)
    async with db.transaction() as s:
        values = MetadataValues(s, NOW)
        first = await values.set("c1", "costCenter", "42", "alice")
        second = await values.set("c1", "costCenter", "43", "bob")
        same = await values.set("c1", "costCenter", "43", "bob")
    assert (first.old, first.new) == (None, "42")
    assert (second.old, second.new, second.actor) == ("42", "43", "bob")
    assert same is None
    async with db.session() as s:
        values = MetadataValues(s, NOW)
        assert await values.fields("c1") == {"costCenter": "43"}
        history = await values.history("c1")
    assert [(h["old"], h["new"], h["actor"]) for h in history] == [
        (None, "42", "alice"),
        ("42", "43", "bob"),
    ]
    assert history[0]["changed_at"] == NOW.isoformat()


async def test_compare_reports_each_difference_with_expected_and_actual(db) -> None:
    await _known(db)
    async with db.transaction() as s:
        values = MetadataValues(s, NOW)
        await values.set("c1", "isEnabled", "true", "a")
        await values.set("c1", "site", "paris", "a")
    async with db.session() as s:
        values = MetadataValues(s, NOW)
        ok = await values.compare("c1", {"isEnabled": True, "site": "paris"})
        bad = await values.compare("c1", {"isEnabled": "false", "owner": "x"})
    assert ok == {"cert_id": "c1", "match": True, "differences": {}}
    assert bad["match"] is False
    assert bad["differences"] == {
        "isEnabled": {"expected": "false", "actual": "true"},
        "owner": {"expected": "x", "actual": None},
    }


async def test_an_owner_disabled_at_offboarding_stays_disabled(db) -> None:
    async with db.transaction() as s:
        values = MetadataValues(s, NOW)
        await values.disable_owner("carol", "ev1")
        await values.disable_owner("carol", "ev2")
    async with db.session() as s:
        values = MetadataValues(s, NOW)
        assert await values.owner_is_disabled("carol")
        assert not await values.owner_is_disabled("dave")
        assert not await values.owner_is_disabled(None)
