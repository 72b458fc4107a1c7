from __future__ import annotations

import typer

from services.cli import output
from services.cli.sdk import Certbus

NAME = "users"
app = typer.Typer(no_args_is_help=True, help="Users as inventory knows them from HR events.")


@app.command("list")
def list_(
    status: str = typer.Option(None, "--status", help="active or offboarded"),
    department: str = typer.Option(None, "--department"),
    limit: int = typer.Option(100, "--limit"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """List users with their devices."""
    with output.api_errors():
        items = Certbus().identities.users(status=status, department=department, limit=limit)
    output.emit_json(items) if json_ else output.table(
        items,
        [
            ("user", "user"),
            ("email", "e-mail"),
            ("department", "department"),
            ("status", "status"),
            ("devices", "devices"),
        ],
    )


@app.command()
def show(user: str, json_: bool = typer.Option(False, "--json")) -> None:
    """One user: devices, provisioning requests and how many certificates they own."""
    with output.api_errors():
        data = Certbus().identities.user(user)
    if json_:
        output.emit_json(data)
        return
    for key in ("user", "email", "department", "roles", "status", "devices", "certificates"):
        output.console.print(f"[bold]{key:>12}[/bold]  {output.esc(data.get(key))}")
    output.table(
        data.get("provisioning", []),
        [
            ("device", "device"),
            ("template", "template"),
            ("status", "status"),
            ("cert_id", "certificate"),
        ],
    )
