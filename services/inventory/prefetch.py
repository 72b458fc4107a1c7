"""Load a batch's rows in a few queries, so per-event lookups neither query nor flush.

A batch of onboardings touches users, devices, agents and stores by key. Fetching them all
with ``IN`` queries first puts the existing rows in the session and records which keys do not
exist; ``lookup`` then answers both cases without a round trip (or an autoflush).
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

M = TypeVar("M", bound=SQLModel)


def _absent(session: AsyncSession) -> set[tuple[str, Any]]:
    return session.info.setdefault("inventory_absent", set())


async def load(session: AsyncSession, model: type[M], column: Any, keys: set[Any]) -> None:
    if not keys:
        return
    rows = (await session.exec(select(model).where(col(column).in_(keys)))).all()
    found = {getattr(r, column.key) for r in rows}
    _absent(session).update((model.__name__, k) for k in keys - found)


async def lookup(session: AsyncSession, model: type[M], key: Any) -> M | None:
    if (model.__name__, key) in _absent(session):
        return None
    return await session.get(model, key)


def added(session: AsyncSession, row: SQLModel, key: Any) -> None:
    session.add(row)
    _absent(session).discard((type(row).__name__, key))
