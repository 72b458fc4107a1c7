"""Inventory's synchronous operations (``rpc.inventory.*``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, select

from services.inventory import catalog, query
from services.inventory.indexes import has_sqlite_index, selective
from services.inventory.reads import Reads
from services.inventory.tables import Certificate
from shared.bus import RpcError
from shared.clock import utcnow
from shared.db import is_sqlite
from shared.runtime import ServiceRuntime

MAX_LIMIT = 10000

DENSE = 5000
"""With at least this many matches, walking the sort column's index finds a page quickly."""


def status_filter(status: str) -> ColumnElement[bool]:
    now = utcnow()
    if status == "revoked":
        return col(Certificate.status) == "revoked"
    if status == "expired":
        return and_(col(Certificate.status) != "revoked", col(Certificate.not_after) < now)
    if status == "active":
        return and_(col(Certificate.status) != "revoked", col(Certificate.not_after) >= now)
    raise RpcError(
        "invalid_status", f"status must be active, revoked or expired, not {status!r}", 422
    )


class InventoryApi:
    def __init__(self, db: Reads) -> None:
        self.db = db
        self._text_index = False

    async def text_index(self) -> bool:
        """Whether SQLite's trigram index is there (looked up until it is: it is built at start)."""
        if not self._text_index and is_sqlite(self.db.engine):
            async with self.db.session() as session:
                self._text_index = await has_sqlite_index(await session.connection())
        return self._text_index

    async def certs_list(self, req: dict[str, Any]) -> dict[str, Any]:
        """Search the catalog: owner, status, query (the search language), paging, sort."""
        conditions = []
        if req.get("owner"):
            conditions.append(Certificate.owner == req["owner"])
        if req.get("status"):
            conditions.append(status_filter(str(req["status"])))
        tree = None
        if str(req.get("query") or "").strip():
            try:
                tree = query.parse(str(req["query"]))
            except query.QueryError as exc:
                raise RpcError("invalid_query", str(exc), 422) from exc
        limit = max(1, min(int(req.get("limit") or 100), MAX_LIMIT))
        offset = max(0, int(req.get("offset") or 0))
        try:
            query.order_by(req.get("sort"))
        except query.QueryError as exc:
            raise RpcError("invalid_sort", str(exc), 422) from exc
        text_index = tree is not None and await self.text_index()
        async with self.db.session() as session:
            scans = False
            if tree is not None:
                indexed: set[str] = set()
                if text_index:
                    candidates = query.index_candidates(tree)
                    indexed = await selective(await session.connection(), candidates)
                try:
                    condition, scans = query.compile_search(tree, indexed=indexed)
                except query.QueryError as exc:
                    raise RpcError("invalid_query", str(exc), 422) from exc
                conditions.append(condition)
            where = and_(*conditions) if conditions else None
            base = select(Certificate)
            counter = select(func.count()).select_from(Certificate)
            if where is not None:
                base, counter = base.where(where), counter.where(where)
            total = int((await session.exec(counter)).one())
            # A condition no index answers (or a rare -contains): sort the few matches rather
            # than walk the sort index row by row; many matches: walk it, a page comes soon.
            order = query.order_by(req.get("sort"), avoid_index=scans and total < DENSE)
            rows = (await session.exec(base.order_by(*order).limit(limit).offset(offset))).all()
            locations = await catalog.locations_of(session, [r.cert_id for r in rows])
        return {
            "items": [catalog.to_json(r, locations[r.cert_id]) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    async def certs_get(self, req: dict[str, Any]) -> dict[str, Any]:
        """One certificate by id, serial or thumbprint, with its PEM and locations."""
        ident = str(req.get("id") or "").strip()
        if not ident:
            raise RpcError("invalid_request", "id is required", 422)
        async with self.db.session() as session:
            row = await catalog.find(session, ident)
            if row is None:
                raise RpcError("not_found", f"no certificate {ident!r}", 404)
            locations = await catalog.locations_of(session, [row.cert_id])
        return catalog.to_json(row, locations[row.cert_id], with_pem=True)

    def register(self, rt: ServiceRuntime) -> None:
        rt.rpc("certs.list", self.certs_list)
        rt.rpc("certs.get", self.certs_get)
