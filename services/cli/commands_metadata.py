from __future__ import annotations

import json

import typer

from services.cli import output
from services.cli.sdk import Certbus

NAME = "metadata"
app = typer.Typer(no_args_is_help=True, help="Certificate metadata and the Compare valve.")


def _parse(pairs: list[str]) -> dict[str, object]:
    """``name=value`` pairs; a value that reads as JSON (true, 42, null) is taken as such."""
    fields: dict[str, object] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            output.fail("usage", f"expected name=value, got {pair!r}")
        try:
            fields[name] = json.loads(raw)
        except ValueError:
            fields[name] = raw
    return fields


@app.command()
def show(cert_id: str, json_: bool = typer.Option(False, "--json")) -> None:
    """A certificate's metadata (by id, serial or thumbprint)."""
    with output.api_errors():
        fields = Certbus().metadata.get(cert_id)
    if json_:
        output.emit_json(fields)
    else:
        output.table(
            [{"field": k, "value": v} for k, v in fields.items()],
            [("field", "field"), ("value", "value")],
            title=cert_id,
        )


@app.command("set")
def set_(
    cert_id: str,
    pairs: list[str] = typer.Argument(..., help="name=value ..."),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Set fields, e.g. ``certbus metadata set <id> isEnabled=false costCenter=42``."""
    with output.api_errors():
        result = Certbus().metadata.set(cert_id, _parse(pairs))
    if json_:
        output.emit_json(result)
    else:
        changed = ", ".join(result.get("changed_fields", [])) or "nothing"
        output.console.print(f"changed: {changed}")


@app.command()
def history(cert_id: str, json_: bool = typer.Option(False, "--json")) -> None:
    """Every change of a certificate's metadata, oldest first."""
    with output.api_errors():
        items = Certbus().metadata.history(cert_id)
    if json_:
        output.emit_json(items)
    else:
        output.table(
            items,
            [
                ("changed_at", "when"),
                ("field", "field"),
                ("old", "old"),
                ("new", "new"),
                ("actor", "actor"),
            ],
        )


@app.command()
def compare(
    pairs: list[str] = typer.Argument(..., help="[id] expected name=value ..."),
    cert_id: str = typer.Option(None, "--cert"),
    thumbprint: str = typer.Option(None, "--thumbprint"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Exit 0 when the certificate's values match, 1 when they differ."""
    if not (cert_id or thumbprint) and pairs and "=" not in pairs[0]:
        cert_id, pairs = pairs[0], pairs[1:]  # ``compare <id> name=value``, like ``set``
    if not (cert_id or thumbprint):
        output.fail("usage", "give the certificate: <id>, --cert or --thumbprint", exit_code=2)
    with output.api_errors():
        result = Certbus().metadata.compare(_parse(pairs), cert_id=cert_id, thumbprint=thumbprint)
    if json_:
        output.emit_json(result)
    else:
        output.console.print("match" if result["match"] else "differs")
        for name, diff in result.get("differences", {}).items():
            output.console.print(
                f"  {output.esc(name)}: expected {output.esc(repr(diff['expected']))}, "
                f"is {output.esc(repr(diff['actual']))}"
            )
    if not result["match"]:
        raise typer.Exit(1)


@app.command()
def fields(json_: bool = typer.Option(False, "--json")) -> None:
    """The defined fields."""
    with output.api_errors():
        items = Certbus().metadata.fields()
    if json_:
        output.emit_json(items)
    else:
        output.table(
            items,
            [
                ("name", "name"),
                ("type", "type"),
                ("required", "required"),
                ("default", "default"),
                ("description", "description"),
            ],
        )


@app.command()
def define(
    name: str,
    type_: str = typer.Option("string", "--type", help="string, bool, int or date"),
    required: bool = typer.Option(False, "--required"),
    default: str = typer.Option(None, "--default"),
    description: str = typer.Option("", "--description"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Define or redefine a field."""
    with output.api_errors():
        result = Certbus().metadata.define(
            name, type_, required=required, default=default, description=description
        )
    output.emit_json(result) if json_ else output.console.print(f"defined {result['name']}")
