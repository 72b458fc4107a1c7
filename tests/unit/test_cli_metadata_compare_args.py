"""``certbus metadata compare <id> name=value`` (as the README and ``metadata set`` spell it)
names the certificate positionally; --cert and --thumbprint still work. A usage error exits 2,
so exit 1 keeps meaning "differs"."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from services.cli import commands_metadata
from services.cli.main import app as cli


class _Metadata:
    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self.calls = calls

    def compare(self, expected: dict[str, Any], **ident: Any) -> dict[str, Any]:
        self.calls.append({"expected": expected, **ident})
        return {"cert_id": ident.get("cert_id"), "match": True, "differences": {}}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    class _Certbus:
        metadata = _Metadata(seen)

    monkeypatch.setattr(commands_metadata, "Certbus", _Certbus)
    return seen


def test_the_certificate_can_be_named_positionally(calls: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(cli, ["metadata", "compare", "abc-123", "isEnabled=true"])
    assert result.exit_code == 0, result.output
    assert calls == [{"expected": {"isEnabled": True}, "cert_id": "abc-123", "thumbprint": None}]


def test_the_options_still_work(calls: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(cli, ["metadata", "compare", "--cert", "abc", "isEnabled=false"])
    assert result.exit_code == 0, result.output
    assert calls[0]["cert_id"] == "abc"


def test_no_certificate_is_a_usage_error_not_a_difference(calls: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(cli, ["metadata", "compare", "isEnabled=true"])
    assert result.exit_code == 2
    assert calls == []
