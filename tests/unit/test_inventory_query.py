"""The search language's parser: what it accepts, and errors that say where and what."""

from __future__ import annotations

import pytest

from services.inventory import query
from services.inventory.query import BoolOp, Comparison, Not, QueryError


def test_the_reference_query_parses_with_and_binding_tighter_than_or() -> None:
    tree = query.parse(
        'CN -contains "alice" AND (NotAfter -lt "%TODAY+30%" OR '
        'SignatureAlgorithm -eq "sha1WithRSAEncryption")'
    )
    assert isinstance(tree, BoolOp) and tree.op == "and"
    first, second = tree.parts
    assert first == Comparison("CN", "-contains", "alice", 1, 14)
    assert isinstance(second, BoolOp) and second.op == "or"
    assert [p.field for p in second.parts] == ["NotAfter", "SignatureAlgorithm"]  # type: ignore[union-attr]


def test_keywords_and_operators_ignore_case_and_values_may_be_bare_or_quoted() -> None:
    tree = query.parse("not owner -EQ bob or Template -eq 'web server'")
    assert isinstance(tree, BoolOp) and tree.op == "or"
    assert isinstance(tree.parts[0], Not)
    assert tree.parts[1] == Comparison("Template", "-eq", "web server", 22, 35)


def test_null_is_a_keyword_but_a_quoted_null_is_a_string() -> None:
    assert query.parse("Owner -eq NULL").value is None  # type: ignore[union-attr]
    assert query.parse('Owner -eq "NULL"').value == "NULL"  # type: ignore[union-attr]


def test_escaped_quotes_stay_in_the_value() -> None:
    assert query.parse(r'CN -eq "say \"hi\""').value == 'say "hi"'  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("", 1, "expected a condition"),
        ("CN", 3, "expected an operator"),
        ("CN -like x", 4, "unknown operator '-like'"),
        ("CN -eq", 7, "expected a value after -eq, found the end"),
        ('CN -eq "alice', 8, "unterminated string"),
        ("(CN -eq a", 10, "expected ')' to close the '(' at position 1"),
        ("CN -eq a b", 10, "expected AND, OR or the end, found 'b'"),
        ("CN -eq a AND", 13, "expected a field name"),
        ("KeySize -ge big", 13, "KeySize is a number"),
        ("NotAfter -lt soon", 14, "expected a date"),
        ("Status -eq lost", 12, "expected active, revoked or expired"),
        ("NotAfter -contains 2026", 1, "NotAfter is a date"),
        ("CN -lt NULL", 8, "NULL can only be compared with -eq or -ne"),
    ],
)
def test_errors_name_the_position_and_what_was_expected(
    text: str, position: int, expected: str
) -> None:
    with pytest.raises(QueryError) as caught:
        query.compile_query(text) if text else query.parse(text)
    assert caught.value.position == position
    assert expected in str(caught.value)
    assert str(caught.value).startswith(f"at position {position}:")


def test_sorting_accepts_field_names_with_a_direction() -> None:
    assert len(query.order_by("-NotAfter,CN")) == 3
    with pytest.raises(QueryError, match="cannot sort by"):
        query.order_by("Colour")
