from __future__ import annotations

import typer

from services.cli import commands_revoke, output
from services.cli.sdk import Certbus

NAME = "certs"
app = typer.Typer(no_args_is_help=True, help="The certificate catalog.")

COLUMNS = [("id", "id"), ("serial", "serial"), ("subject", "subject"), ("owner", "owner"),
           ("status", "status"), ("not_after", "not after")]


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
    for key in ("id", "serial", "subject", "issuer", "owner", "status", "template",
                "not_before", "not_after", "thumbprint_sha1", "thumbprint_sha256"):
        output.console.print(f"[bold]{key:>18}[/bold]  {cert.get(key)}")
    for loc in cert.get("locations", []):
        output.console.print(f"{'location':>18}  {loc.get('machine')}:{loc.get('store_path')} "
                             f"({loc.get('store_type')}, {loc.get('alias')})")


commands_revoke.register(app)
