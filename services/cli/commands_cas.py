from __future__ import annotations

import sys

import typer

from services.cli import output
from services.cli.sdk import Certbus

NAME = "cas"
app = typer.Typer(no_args_is_help=True, help="Certificate authorities and their chains.")

COLUMNS = [
    ("name", "name"),
    ("kind", "kind"),
    ("key_type", "key"),
    ("parent", "parent"),
    ("subject_dn", "subject"),
    ("not_after", "not after"),
    ("backend", "backend"),
]


@app.command("list")
def list_(json_: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """List the CAs."""
    with output.api_errors():
        items = Certbus().cas.list()
    output.emit_json(items) if json_ else output.table(items, COLUMNS)


@app.command()
def chain(name: str) -> None:
    """Print a CA's chain as PEM (the CA first, the root last)."""
    with output.api_errors():
        sys.stdout.write(Certbus().cas.chain_pem(name))
