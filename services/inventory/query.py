"""The catalog's search language (filled in below): compiled to SQLAlchemy expressions."""

from __future__ import annotations

from typing import Any

from services.inventory.tables import Certificate


class QueryError(ValueError):
    pass


SORTABLE = {
    "notafter": Certificate.not_after,
    "notbefore": Certificate.not_before,
    "cn": Certificate.cn,
    "owner": Certificate.owner,
    "serialnumber": Certificate.serial,
    "template": Certificate.template,
    "status": Certificate.status,
}


def compile_query(text: str) -> Any:
    raise QueryError("the search language is not available yet")


def order_by(sort: str | None) -> list[Any]:
    if not sort:
        return [Certificate.not_after.desc(), Certificate.cert_id]  # type: ignore[union-attr]
    desc = sort.startswith("-")
    key = sort.lstrip("+-").replace("_", "").lower()
    column = SORTABLE.get(key)
    if column is None:
        raise QueryError(f"cannot sort by {sort!r}; choose one of {sorted(SORTABLE)}")
    return [column.desc() if desc else column.asc(), Certificate.cert_id]  # type: ignore[union-attr]
