"""Metadata field definitions: a name, a type, whether it is required, and a default.

Values travel as text on the bus; a definition says which texts are valid and gives each
value one canonical spelling (``True``, ``yes`` and ``1`` are all stored as ``true``), so that
Compare answers the same whichever spelling a relying party sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.metadata.tables import FieldDefinitionRow

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


class FieldType(StrEnum):
    STRING = "string"
    BOOL = "bool"
    INT = "int"
    DATE = "date"


class InvalidValue(ValueError):
    pass


@dataclass(frozen=True)
class FieldDefinition:
    name: str
    type: FieldType = FieldType.STRING
    required: bool = False
    default: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.default is not None:
            object.__setattr__(self, "default", self.normalise(self.default))

    def normalise(self, value: Any) -> str | None:
        """The canonical text of ``value`` for this field, or ``InvalidValue`` saying why not."""
        if value is None:
            if self.required:
                raise InvalidValue(f"{self.name} is required")
            return None
        return canonical(self.type, value, self.name)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type.value,
            "required": self.required,
            "default": self.default,
            "description": self.description,
        }


def canonical(kind: FieldType, value: Any, name: str = "value") -> str:
    text = str(value).strip() if not isinstance(value, bool) else ("true" if value else "false")
    if kind == FieldType.BOOL:
        if text.lower() in _TRUE:
            return "true"
        if text.lower() in _FALSE:
            return "false"
        raise InvalidValue(f"{name} must be true or false, not {text!r}")
    if kind == FieldType.INT:
        try:
            return str(int(text))
        except ValueError:
            raise InvalidValue(f"{name} must be an integer, not {text!r}") from None
    if kind == FieldType.DATE:
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            try:
                return datetime.fromisoformat(text).date().isoformat()
            except ValueError:
                raise InvalidValue(f"{name} must be a date (YYYY-MM-DD), not {text!r}") from None
    return str(value)


BUILT_IN = (
    FieldDefinition(
        "isEnabled",
        FieldType.BOOL,
        default="true",
        description="false disables the certificate at the access valve",
    ),
)


class Definitions:
    """The definitions on a session; fields without a definition are free text."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def all(self) -> list[FieldDefinition]:
        rows = (
            await self._s.exec(select(FieldDefinitionRow).order_by(col(FieldDefinitionRow.name)))
        ).all()
        return [_from_row(r) for r in rows]

    async def named(self, names: list[str]) -> dict[str, FieldDefinition]:
        if not names:
            return {}
        query = select(FieldDefinitionRow).where(col(FieldDefinitionRow.name).in_(names))
        return {r.name: _from_row(r) for r in (await self._s.exec(query)).all()}

    async def get(self, name: str) -> FieldDefinition | None:
        row = await self._s.get(FieldDefinitionRow, name)
        return _from_row(row) if row else None

    async def define(self, definition: FieldDefinition) -> None:
        row = await self._s.get(FieldDefinitionRow, definition.name) or FieldDefinitionRow(
            name=definition.name
        )
        row.type, row.required = definition.type.value, definition.required
        row.default, row.description = definition.default, definition.description
        self._s.add(row)
        await self._s.flush()

    async def ensure_built_in(self) -> None:
        for definition in BUILT_IN:
            if await self._s.get(FieldDefinitionRow, definition.name) is None:
                await self.define(definition)


def _from_row(row: FieldDefinitionRow) -> FieldDefinition:
    return FieldDefinition(
        row.name, FieldType(row.type), row.required, row.default, row.description
    )
