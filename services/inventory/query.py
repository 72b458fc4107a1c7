"""The catalog's search language, in the style PKI admins know from PowerShell:

    CN -contains "alice" AND
        (NotAfter -lt "%TODAY+30%" OR SignatureAlgorithm -eq "sha1WithRSAEncryption")

A tokenizer and a recursive-descent parser build a small tree, which compiles to a SQLAlchemy
expression: every value is a bound parameter, never text pasted into SQL, so the same query runs
on SQLite and PostgreSQL. Text comparisons ignore case. Errors name the position (1-based) and
what was expected there.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, exists, false, func, literal_column, not_, or_, select, true
from sqlalchemy.orm import Mapped
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from services.inventory.indexes import SEARCH_TABLE, row_table, search_table
from services.inventory.tables import Certificate, CertificateField, Location
from shared.clock import utcnow

OPERATORS = (
    "-eq", "-ne", "-contains", "-notcontains", "-startswith", "-endswith",
    "-lt", "-le", "-gt", "-ge",
)  # fmt: skip
TEXT_ONLY = {"-contains", "-notcontains", "-startswith", "-endswith"}
NEGATIVE = {"-ne": "-eq", "-notcontains": "-contains"}


class QueryError(ValueError):
    def __init__(self, position: int, message: str) -> None:
        super().__init__(f"at position {position}: {message}")
        self.position = position
        self.message = message


@dataclass(frozen=True)
class Token:
    kind: str  # word, string, op, and, or, not, lparen, rparen, end
    text: str
    position: int


_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<lparen>\()
      | (?P<rparen>\))
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>-[A-Za-z]+)
      | (?P<word>[^\s()"']+)
    """,
    re.VERBOSE,
)


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            quote = text[pos]
            raise QueryError(pos + 1, f"unterminated string starting with {quote}")
        kind, value = m.lastgroup or "", m.group()
        if kind == "op":
            if value.lower() not in OPERATORS:
                raise QueryError(
                    pos + 1, f"unknown operator {value!r}; expected one of {', '.join(OPERATORS)}"
                )
            value = value.lower()
        elif kind == "string":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif kind == "word" and value.upper() in ("AND", "OR", "NOT"):
            kind = value.lower()
        if kind != "space":
            tokens.append(Token(kind, value, pos + 1))
        pos = m.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str
    value: str | None  # None: the NULL keyword
    position: int
    value_position: int


@dataclass(frozen=True)
class BoolOp:
    op: str  # and, or
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    part: Node


Node = Comparison | BoolOp | Not


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise QueryError(self.tok.position, 'expected a condition such as CN -eq "name"')
        node = self.or_()
        if self.tok.kind != "end":
            raise QueryError(
                self.tok.position, f"expected AND, OR or the end, found {self.tok.text!r}"
            )
        return node

    def or_(self) -> Node:
        parts = [self.and_()]
        while self.tok.kind == "or":
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def and_(self) -> Node:
        parts = [self.not_()]
        while self.tok.kind == "and":
            self.take()
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def not_(self) -> Node:
        if self.tok.kind == "not":
            self.take()
            return Not(self.not_())
        return self.primary()

    def primary(self) -> Node:
        if self.tok.kind == "lparen":
            opening = self.take()
            node = self.or_()
            if self.tok.kind != "rparen":
                raise QueryError(
                    self.tok.position,
                    f"expected ')' to close the '(' at position "
                    f"{opening.position}, found {_shown(self.tok)}",
                )
            self.take()
            return node
        if self.tok.kind != "word":
            raise QueryError(self.tok.position, f"expected a field name, found {_shown(self.tok)}")
        field = self.take()
        if self.tok.kind != "op":
            raise QueryError(
                self.tok.position,
                f"expected an operator ({', '.join(OPERATORS)}) "
                f"after {field.text}, found {_shown(self.tok)}",
            )
        op = self.take()
        if self.tok.kind not in ("word", "string"):
            raise QueryError(
                self.tok.position, f"expected a value after {op.text}, found {_shown(self.tok)}"
            )
        value = self.take()
        is_null = value.kind == "word" and value.text.upper() == "NULL"
        return Comparison(
            field.text, op.text, None if is_null else value.text, field.position, value.position
        )


def _shown(tok: Token) -> str:
    return "the end of the query" if tok.kind == "end" else repr(tok.text)


def parse(text: str) -> Node:
    return Parser(text).parse()


# --- compilation -------------------------------------------------------------------------

_DATE_TOKEN = re.compile(r"^%(TODAY|NOW)(?:([+-])(\d+))?%$", re.IGNORECASE)


@dataclass(frozen=True)
class FieldDef:
    kind: (
        str  # text, lowercase (stored normalised), int, date, status, thumbprint, location, device
    )
    column: Any = None


TEXT_COLUMNS = {
    "cn": Certificate.cn,
    "dn": Certificate.subject_dn,
    "subjectdn": Certificate.subject_dn,
    "subject": Certificate.subject_dn,
    "issuerdn": Certificate.issuer_dn,
    "issuer": Certificate.issuer_dn,
    "issuerca": Certificate.issuer_ca,
    "ca": Certificate.issuer_ca,
    "template": Certificate.template,
    "keytype": Certificate.key_type,
    "signaturealgorithm": Certificate.signature_algorithm,
    "revocationreason": Certificate.revocation_reason,
    "revocationcomment": Certificate.revocation_comment,
    "owner": Certificate.owner,
    "source": Certificate.source,
    "id": Certificate.cert_id,
    "certid": Certificate.cert_id,
    "requestid": Certificate.request_id,
}

FIELDS: dict[str, FieldDef] = {
    **{name: FieldDef("text", column) for name, column in TEXT_COLUMNS.items()},
    "serialnumber": FieldDef("lowercase", Certificate.serial),
    "serial": FieldDef("lowercase", Certificate.serial),
    "publickeysha256": FieldDef("lowercase", Certificate.public_key_sha256),
    "thumbprint": FieldDef("thumbprint"),
    "keysize": FieldDef("int", Certificate.key_size),
    "notbefore": FieldDef("date", Certificate.not_before),
    "notafter": FieldDef("date", Certificate.not_after),
    "revokedat": FieldDef("date", Certificate.revoked_at),
    "status": FieldDef("status"),
    "device": FieldDef("device"),
    "machine": FieldDef("location", Location.machine),
    "store": FieldDef("location", Location.store_path),
    "storetype": FieldDef("location", Location.store_type),
    "alias": FieldDef("location", Location.alias),
}

FIELD_NAMES = (
    "CN", "DN", "IssuerDN", "SerialNumber", "Thumbprint", "NotBefore", "NotAfter", "Template",
    "KeyType", "KeySize", "SignatureAlgorithm", "Status", "RevocationReason", "Owner", "Device",
    "Store", "StoreType", "Alias", "Machine", "IssuerCA", "Id", "Source", "RevokedAt",
)  # fmt: skip


def _key(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


TEXT_INDEXED = {
    Certificate.cn: "cn",
    Certificate.subject_dn: "subject_dn",
    Certificate.owner: "owner",
}
"""Columns the SQLite trigram index covers (see :mod:`services.inventory.indexes`)."""

TRIGRAM = 3


class Compiler:
    def __init__(self, now: datetime | None = None, indexed: Collection[str] = ()) -> None:
        self.now = now or utcnow()
        self.indexed = indexed
        """The ``MATCH`` expressions SQLite's trigram index should answer (see
        :func:`index_candidates`); PostgreSQL's indexes need no help."""
        self.scans = False
        """Whether some condition can only be answered row by row (no index narrows it)."""

    def compile(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, BoolOp):
            parts = [self.compile(p) for p in node.parts]
            return and_(*parts) if node.op == "and" else or_(*parts)
        if isinstance(node, Not):
            self.scans = True
            return _negate(self.compile(node.part))
        return self.comparison(node)

    def comparison(self, c: Comparison) -> ColumnElement[bool]:
        if c.op in NEGATIVE or c.op in ("-contains", "-endswith"):
            self.scans = True
        if c.op in NEGATIVE:
            positive = Comparison(c.field, NEGATIVE[c.op], c.value, c.position, c.value_position)
            return _negate(self.comparison(positive))
        spec = FIELDS.get(_key(c.field))
        if spec is None:
            return self.metadata(c)
        if c.value is None:
            return self.null(c, spec)
        if spec.kind == "text":
            condition = _text(func.lower(spec.column), c.op, c.value.lower(), c)
            return self.narrowed(spec.column, c, condition)
        if spec.kind == "lowercase":
            value = c.value.replace(":", "").strip().lower()
            if spec.column is Certificate.serial and c.op == "-eq":
                value = value.lstrip("0") or "0"
            return _text(spec.column, c.op, value, c)
        if spec.kind == "thumbprint":
            value = c.value.replace(":", "").strip().lower()
            return or_(
                _text(Certificate.thumbprint_sha1, c.op, value, c),
                _text(Certificate.thumbprint_sha256, c.op, value, c),
            )
        if spec.kind == "int":
            return _ordered(spec.column, c.op, _integer(c), c)
        if spec.kind == "date":
            return self.date(spec.column, c)
        if spec.kind == "status":
            return self.status(c)
        if spec.kind == "device":
            on_cert = _text(func.lower(Certificate.device), c.op, c.value.lower(), c)
            return or_(on_cert, self.located(Location.machine, c))
        return self.located(spec.column, c)

    def narrowed(
        self, column: Any, c: Comparison, condition: ColumnElement[bool]
    ) -> ColumnElement[bool]:
        """On SQLite, let the trigram index pick the candidates for a substring search.

        The ``LIKE`` stays: the index narrows, the ``LIKE`` decides, so the answer is exactly a
        full scan's. The expression is a bound parameter of ``MATCH``.
        """
        expression = match_expression(column, c)
        if expression is None or expression not in self.indexed:
            return condition
        candidates = (
            select(row_table.c.cert_id)
            .join(search_table, search_table.c.rowid == row_table.c.id)
            .where(literal_column(SEARCH_TABLE).op("MATCH")(expression))
        )
        return and_(col(Certificate.cert_id).in_(candidates), condition)

    def null(self, c: Comparison, spec: FieldDef) -> ColumnElement[bool]:
        if c.op != "-eq":
            raise QueryError(c.value_position, "NULL can only be compared with -eq or -ne")
        if spec.kind == "thumbprint":
            return and_(
                col(Certificate.thumbprint_sha1).is_(None),
                col(Certificate.thumbprint_sha256).is_(None),
            )
        if spec.kind == "status":
            return false()
        if spec.kind in ("location", "device"):
            located = exists(
                select(col(Location.id)).where(
                    col(Location.cert_id) == Certificate.cert_id, col(Location.active)
                )
            )
            if spec.kind == "device":
                return and_(col(Certificate.device).is_(None), not_(located))
            return not_(located)
        return spec.column.is_(None)

    def located(self, column: Any, c: Comparison) -> ColumnElement[bool]:
        assert c.value is not None
        return exists(
            select(col(Location.id)).where(
                col(Location.cert_id) == Certificate.cert_id,
                col(Location.active),
                _text(func.lower(column), c.op, c.value.lower(), c),
            )
        )

    def metadata(self, c: Comparison) -> ColumnElement[bool]:
        # Field names ignore case, like every other name in the language.
        of_cert = and_(
            col(CertificateField.cert_id) == Certificate.cert_id,
            func.lower(CertificateField.field) == c.field.lower(),
        )
        if c.value is None:
            if c.op != "-eq":
                raise QueryError(c.value_position, "NULL can only be compared with -eq or -ne")
            return not_(
                exists(
                    select(col(CertificateField.cert_id)).where(
                        of_cert, col(CertificateField.value).is_not(None)
                    )
                )
            )
        condition = _text(func.lower(CertificateField.value), c.op, c.value.lower(), c)
        return exists(select(col(CertificateField.cert_id)).where(of_cert, condition))

    def status(self, c: Comparison) -> ColumnElement[bool]:
        assert c.value is not None
        if c.op != "-eq":
            raise QueryError(c.position, "Status can only be compared with -eq or -ne")
        value, now = c.value.lower(), self.now
        revoked = col(Certificate.status) == "revoked"
        if value == "revoked":
            return revoked
        if value == "expired":
            return and_(not_(revoked), col(Certificate.not_after) < now)
        if value == "active":
            return and_(
                not_(revoked),
                or_(
                    col(Certificate.not_after).is_(None),
                    col(Certificate.not_after) >= now,
                ),
            )
        raise QueryError(c.value_position, f"expected active, revoked or expired, not {c.value!r}")

    def date(self, column: Any, c: Comparison) -> ColumnElement[bool]:
        if c.op in TEXT_ONLY:
            raise QueryError(c.position, f"{c.field} is a date: use -eq, -ne, -lt, -le, -gt, -ge")
        start, whole_day = self.when(c)
        if not whole_day:
            return _ordered(column, c.op, start, c)
        end = start + timedelta(days=1)
        return {
            "-eq": lambda: and_(column >= start, column < end),
            "-lt": lambda: column < start,
            "-le": lambda: column < end,
            "-gt": lambda: column >= end,
            "-ge": lambda: column >= start,
        }[c.op]()

    def when(self, c: Comparison) -> tuple[datetime, bool]:
        """The instant a date value names, and whether it names a whole day."""
        assert c.value is not None
        m = _DATE_TOKEN.match(c.value.strip())
        if m:
            days = int(m.group(3) or 0) * (-1 if m.group(2) == "-" else 1)
            if m.group(1).upper() == "NOW":
                return self.now.astimezone(UTC) + timedelta(days=days), False
            today = datetime.combine(self.now.astimezone(UTC).date(), time(), UTC)
            return today + timedelta(days=days), True
        try:
            if len(c.value.strip()) == 10:
                return datetime.combine(date.fromisoformat(c.value.strip()), time(), UTC), True
            parsed = datetime.fromisoformat(c.value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise QueryError(
                c.value_position,
                f"expected a date (2026-01-31, 2026-01-31T12:00:00Z, %TODAY%, %TODAY+30%), "
                f"not {c.value!r}",
            ) from None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC), False


def match_expression(column: Any, c: Comparison) -> str | None:
    """The FTS5 query (``cn : "alice"``) for a substring search the trigram index can answer."""
    fts_column = TEXT_INDEXED.get(column)
    op = NEGATIVE.get(c.op, c.op)
    if fts_column is None or op not in ("-contains", "-endswith") or c.value is None:
        return None
    if len(c.value) < TRIGRAM or "\x00" in c.value:  # FTS5 cannot quote a NUL: scan
        return None
    return f'{fts_column} : "' + c.value.lower().replace('"', '""') + '"'


def index_candidates(node: Node) -> set[str]:
    """Every ``MATCH`` expression the trigram index could answer for this query."""
    if isinstance(node, BoolOp):
        return set().union(*(index_candidates(p) for p in node.parts))
    if isinstance(node, Not):
        return index_candidates(node.part)
    spec = FIELDS.get(_key(node.field))
    if spec is None or spec.kind != "text":
        return set()
    expression = match_expression(spec.column, node)
    return set() if expression is None else {expression}


def _negate(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """Two-valued NOT: a certificate without a CN is one whose CN is not "alice"."""
    return not_(func.coalesce(condition, false()))


def _integer(c: Comparison) -> int:
    assert c.value is not None
    try:
        return int(c.value)
    except ValueError:
        raise QueryError(c.value_position, f"{c.field} is a number, not {c.value!r}") from None


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _after_prefix(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _text(column: Any, op: str, value: str, c: Comparison) -> ColumnElement[bool]:
    if op == "-eq":
        return column == value
    if op == "-contains":
        return column.like(f"%{_escape_like(value)}%", escape="\\")
    if op == "-startswith":
        if not value:
            return column.is_not(None)
        # The range lets a plain index answer; LIKE keeps the answer exact in any collation.
        return and_(
            column >= value,
            column < _after_prefix(value),
            column.like(f"{_escape_like(value)}%", escape="\\"),
        )
    if op == "-endswith":
        return column.like(f"%{_escape_like(value)}", escape="\\")
    return _ordered(column, op, value, c)


def _ordered(column: Any, op: str, value: Any, c: Comparison) -> ColumnElement[bool]:
    if op == "-eq":
        return column == value
    if op == "-lt":
        return column < value
    if op == "-le":
        return column <= value
    if op == "-gt":
        return column > value
    if op == "-ge":
        return column >= value
    raise QueryError(c.position, f"{op} does not apply to {c.field}")


def compile_query(text: str, now: datetime | None = None) -> ColumnElement[bool]:
    """Parse and compile; an empty query matches everything."""
    return compile_search(text, now)[0]


def compile_search(
    text: str | Node, now: datetime | None = None, indexed: Collection[str] = ()
) -> tuple[ColumnElement[bool], bool]:
    """The condition, and whether it needs a row-by-row scan (see ``order_by``).

    ``indexed``: the substring searches SQLite's trigram index should narrow (the API passes
    the selective ones, see :func:`services.inventory.indexes.selective`)."""
    if isinstance(text, str) and not text.strip():
        return true(), False
    compiler = Compiler(now, indexed)
    condition = compiler.compile(parse(text) if isinstance(text, str) else text)
    return condition, compiler.scans


SORTABLE: dict[str, Mapped[Any]] = {
    "notafter": col(Certificate.not_after),
    "notbefore": col(Certificate.not_before),
    "cn": col(Certificate.cn),
    "dn": col(Certificate.subject_dn),
    "issuerdn": col(Certificate.issuer_dn),
    "owner": col(Certificate.owner),
    "device": col(Certificate.device),
    "serialnumber": col(Certificate.serial),
    "template": col(Certificate.template),
    "keytype": col(Certificate.key_type),
    "keysize": col(Certificate.key_size),
    "signaturealgorithm": col(Certificate.signature_algorithm),
    "status": col(Certificate.status),
    "revokedat": col(Certificate.revoked_at),
    "recordedat": col(Certificate.recorded_at),
}


def order_by(sort: str | None, avoid_index: bool = False) -> list[Any]:
    """``NotAfter`` ascending, ``-NotAfter`` descending; ties broken by id.

    With ``avoid_index`` the sort key is an expression no index covers. A planner that sees
    ``ORDER BY not_after LIMIT 100`` likes to walk that index and filter row by row, which is
    ruinous when the filter is a rare ``-contains`` (seconds on a million rows); this way it
    filters first (by the best index for the condition, or one scan) and sorts the matches.
    """
    keys = [("-NotAfter" if not sort else part.strip()) for part in (sort or "x").split(",")]
    out = []
    for part in keys:
        desc = part.startswith("-")
        column = SORTABLE.get(_key(part.lstrip("+-")))
        if column is None:
            raise QueryError(1, f"cannot sort by {part!r}; choose one of {sorted(SORTABLE)}")
        key = func.coalesce(column, column) if avoid_index else column
        out.append(key.desc() if desc else key.asc())
    return [*out, Certificate.cert_id]
