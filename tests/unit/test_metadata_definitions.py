"""Field definitions: one canonical spelling per value, and precise reasons for bad ones."""

from __future__ import annotations

import pytest

from services.metadata.definitions import (
    BUILT_IN,
    Definitions,
    FieldDefinition,
    FieldType,
    InvalidValue,
    canonical,
)
from services.metadata.tables import TABLES
from shared.db import Database


@pytest.mark.parametrize(
    ("kind", "given", "stored"),
    [
        (FieldType.BOOL, True, "true"),
        (FieldType.BOOL, "Yes", "true"),
        (FieldType.BOOL, "0", "false"),
        (FieldType.BOOL, " FALSE ", "false"),
        (FieldType.INT, "0042", "42"),
        (FieldType.INT, -7, "-7"),
        (FieldType.DATE, "2026-02-03", "2026-02-03"),
        (FieldType.DATE, "2026-02-03T10:00:00+00:00", "2026-02-03"),
        (FieldType.STRING, " keep spaces ", " keep spaces "),
    ],
)
def test_values_are_stored_in_one_canonical_spelling(kind, given, stored) -> None:
    assert canonical(kind, given) == stored


@pytest.mark.parametrize(
    ("kind", "given", "reason"),
    [
        (FieldType.BOOL, "maybe", "must be true or false"),
        (FieldType.INT, "4.2", "must be an integer"),
        (FieldType.DATE, "03/02/2026", "must be a date"),
    ],
)
def test_a_bad_value_is_refused_with_the_reason(kind, given, reason) -> None:
    with pytest.raises(InvalidValue, match=reason):
        canonical(kind, given, "field")


def test_a_required_field_cannot_be_cleared_and_its_default_is_canonical() -> None:
    definition = FieldDefinition("approved", FieldType.BOOL, required=True, default="YES")
    assert definition.default == "true"
    with pytest.raises(InvalidValue, match="approved is required"):
        definition.normalise(None)
    assert FieldDefinition("note").normalise(None) is None


async def test_definitions_are_stored_and_the_built_in_ones_created_once(tmp_path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    await db.create_all(tables=TABLES)
    try:
        async with db.transaction() as s:
            defs = Definitions(s)
            await defs.ensure_built_in()
            await defs.define(FieldDefinition("costCenter", FieldType.INT, required=True))
            await defs.ensure_built_in()
        async with db.transaction() as s:
            await Definitions(s).define(
                FieldDefinition("costCenter", FieldType.STRING, default="x")
            )
        async with db.session() as s:
            stored = {d.name: d for d in await Definitions(s).all()}
    finally:
        await db.dispose()
    assert stored["isEnabled"] == BUILT_IN[0]
    assert stored["costCenter"] == FieldDefinition("costCenter", FieldType.STRING, default="x")
