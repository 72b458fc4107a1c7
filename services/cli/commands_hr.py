from __future__ import annotations

import typer

from services.cli import output
from services.cli.sdk import Certbus

NAME = "hr"
app = typer.Typer(no_args_is_help=True, help="Publish HR events (onboard, offboard).")


@app.command()
def onboard(
    user: str,
    email: str = typer.Option(None, "--email"),
    department: str = typer.Option(None, "--department"),
    device: list[str] = typer.Option([], "--device", help="A device of the user; repeat for more"),
    role: list[str] = typer.Option([], "--role"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Announce a new user: certificates are issued and installed on each device."""
    with output.api_errors():
        data = Certbus().hr.onboard(
            user, email=email, department=department, devices=device, roles=role
        )
    output.emit_json(data) if json_ else output.console.print(
        f"user.onboarded accepted for [bold]{user}[/bold] (event {data['event_id']})"
    )


@app.command()
def offboard(
    user: str,
    mode: str = typer.Option("revoke", "--mode", help="revoke or disable"),
    comment: str = typer.Option(None, "--comment"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Announce a leaver: every certificate of the user and the user's devices is revoked."""
    with output.api_errors():
        data = Certbus().hr.offboard(user, mode=mode, comment=comment)
    output.emit_json(data) if json_ else output.console.print(
        f"user.offboarded accepted for [bold]{user}[/bold] (event {data['event_id']})"
    )


@app.command()
def offboarding(user: str, json_: bool = typer.Option(False, "--json")) -> None:
    """Progress of a user's offboarding: certificates found, revoked, removed, still pending."""
    with output.api_errors():
        data = Certbus().hr.offboarding(user)
    if json_:
        output.emit_json(data)
        return
    output.console.print(
        f"[bold]{data['user']}[/bold] offboarding ({data.get('mode')}): {data.get('status')} — "
        f"found {data.get('found')}, revoked {data.get('revoked')}, removed {data.get('removed')}"
        f"; started {data.get('started_at')}, completed {data.get('completed_at') or '-'}"
    )
    pending = data.get("pending") or {}
    for key, ids in pending.items():
        if ids:
            output.console.print(f"  pending {key.replace('_', ' ')}: {', '.join(ids)}")
    output.table(
        data.get("certificates", []),
        [("id", "id"), ("serial", "serial"), ("status", "status"), ("revoked_at", "revoked at")],
    )
