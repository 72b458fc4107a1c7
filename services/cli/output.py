"""How the CLI prints: rich tables for people, ``--json`` for scripts, errors on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from services.cli.sdk import CertbusError

console = Console()
err_console = Console(stderr=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], title: str | None = None
) -> None:
    t = Table(title=title)
    for _, header in columns:
        t.add_column(header)
    for row in rows:
        # Text, not markup: a subject such as "CN=web [prod]" is shown as it is.
        t.add_row(*(Text(_cell(_dig(row, key))) for key, _ in columns))
    console.print(t)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def esc(value: Any) -> str:
    """A value to put into a line printed with markup, shown as it is."""
    return escape(_cell(value))


def _dig(row: dict[str, Any], key: str) -> Any:
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def fail(code: str, message: str, exit_code: int = 1) -> NoReturn:
    err_console.print(f"[red]error[/red] {esc(code)}: {esc(message)}")
    raise typer.Exit(exit_code)


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn API errors into a non-zero exit with the code and message on stderr."""
    try:
        yield
    except CertbusError as exc:
        fail(exc.code, exc.message, 2 if exc.status < 500 else 3)
    except Exception as exc:  # noqa: BLE001 - connection refused and friends
        import httpx

        if isinstance(exc, httpx.HTTPError):
            fail("unreachable", f"{exc} (is the gateway running? CERTBUS_URL)", 3)
        raise
