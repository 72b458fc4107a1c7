from __future__ import annotations

import typer

from services.cli import output
from services.cli.sdk import Certbus

NAME = "devices"
app = typer.Typer(no_args_is_help=True, help="Devices and what is installed on them.")


@app.command("list")
def list_(
    limit: int = typer.Option(100, "--limit"), json_: bool = typer.Option(False, "--json")
) -> None:
    """List devices with their users."""
    with output.api_errors():
        items = Certbus().identities.devices(limit=limit)
    output.emit_json(items) if json_ else output.table(
        items, [("name", "device"), ("status", "status"), ("users", "users")]
    )


@app.command()
def show(name: str, json_: bool = typer.Option(False, "--json")) -> None:
    """One device: its users, its agent and the certificates installed on it."""
    with output.api_errors():
        data = Certbus().identities.device(name)
    if json_:
        output.emit_json(data)
        return
    for key in ("name", "status", "users"):
        output.console.print(f"[bold]{key:>8}[/bold]  {output.esc(data.get(key))}")
    agent = data.get("agent") or {}
    output.console.print(f"[bold]{'agent':>8}[/bold]  {agent.get('status')} {agent.get('state')}")
    output.table(
        data.get("locations", []),
        [
            ("cert_id", "certificate"),
            ("store_path", "store"),
            ("alias", "alias"),
            ("installed_at", "installed"),
        ],
    )
