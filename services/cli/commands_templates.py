from __future__ import annotations

import typer

from services.cli import output
from services.cli.sdk import Certbus

NAME = "templates"
app = typer.Typer(no_args_is_help=True, help="Certificate templates and their rules.")

COLUMNS = [
    ("name", "name"),
    ("ca", "CA"),
    ("validity_days", "days"),
    ("key_generation", "key made on"),
    ("extended_key_usage", "EKU"),
    ("description", "description"),
]


@app.command("list")
def list_(json_: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """List the templates."""
    with output.api_errors():
        items = Certbus().templates.list()
    if json_:
        output.emit_json(items)
        return
    rows = [
        {**t, "extended_key_usage": ", ".join(t.get("extended_key_usage") or [])} for t in items
    ]
    output.table(rows, COLUMNS)
