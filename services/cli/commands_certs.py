from __future__ import annotations

import typer

from services.cli import commands_revoke, output
from services.cli.sdk import Certbus

NAME = "certs"
app = typer.Typer(no_args_is_help=True, help="The certificate catalog.")

COLUMNS = [
    ("id", "id"),
    ("serial", "serial"),
    ("subject", "subject"),
    ("owner", "owner"),
    ("status", "status"),
    ("not_after", "not after"),
]


@app.command("list")
def list_(
    owner: str = typer.Option(None, "--owner"),
    status: str = typer.Option(None, "--status"),
    limit: int = typer.Option(100, "--limit"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """List certificates, optionally one owner's."""
    with output.api_errors():
        items = Certbus().certs.list(owner=owner, status=status, limit=limit)
    output.emit_json(items) if json_ else output.table(items, COLUMNS)


@app.command()
def show(cert_id: str, json_: bool = typer.Option(False, "--json")) -> None:
    """One certificate by id, serial or thumbprint, with its locations."""
    with output.api_errors():
        cert = Certbus().certs.get(cert_id)
    if json_:
        output.emit_json(cert)
        return
    for key in (
        "id",
        "serial",
        "subject",
        "issuer",
        "owner",
        "status",
        "template",
        "not_before",
        "not_after",
        "thumbprint_sha1",
        "thumbprint_sha256",
    ):
        output.console.print(f"[bold]{key:>18}[/bold]  {output.esc(cert.get(key))}")
    for loc in cert.get("locations", []):
        output.console.print(
            f"{'location':>18}  {output.esc(loc.get('machine'))}:"
            f"{output.esc(loc.get('store_path'))} "
            f"({loc.get('store_type')}, {output.esc(loc.get('alias'))})"
        )


@app.command()
def search(
    query: str = typer.Argument(..., help="e.g. 'CN -contains \"alice\" AND Status -eq active'"),
    limit: int = typer.Option(100, "--limit"),
    offset: int = typer.Option(0, "--offset"),
    sort: str = typer.Option(None, "--sort", help="a field, '-' first for descending: -NotAfter"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Search the catalog with the query language."""
    with output.api_errors():
        page = Certbus().certs.search(query, limit=limit, offset=offset, sort=sort)
    if json_:
        output.emit_json(page)
        return
    output.table(
        page["items"],
        COLUMNS,
        title=f"{len(page['items'])} of {page['total']} matching certificates",
    )


@app.command()
def history(cert_id: str, json_: bool = typer.Option(False, "--json")) -> None:
    """Every event in a certificate's life."""
    with output.api_errors():
        items = Certbus().certs.history(cert_id)
    if json_:
        output.emit_json(items)
        return
    output.table(
        items,
        [("occurred_at", "when"), ("subject", "event"), ("actor", "actor"), ("details", "details")],
    )


@app.command()
def locations(cert_id: str, json_: bool = typer.Option(False, "--json")) -> None:
    """Where a certificate is installed, and where it was."""
    with output.api_errors():
        items = Certbus().certs.locations(cert_id)
    if json_:
        output.emit_json(items)
        return
    output.table(
        items,
        [
            ("machine", "machine"),
            ("store_type", "type"),
            ("store_path", "store"),
            ("alias", "alias"),
            ("active", "active"),
            ("installed_at", "installed"),
            ("removed_at", "removed"),
        ],
    )


commands_revoke.register(app)
