from __future__ import annotations

import typer

from services.cli import output
from services.cli.sdk import Certbus

NAME = "agents"
app = typer.Typer(no_args_is_help=True, help="Agents on machines: approval, liveness, discovery.")

COLUMNS = [
    ("machine", "machine"),
    ("status", "approval"),
    ("state", "state"),
    ("last_seen", "last seen"),
    ("version", "version"),
]


@app.command("list")
def list_(
    status: str = typer.Option(None, "--status", help="pending, approved or rejected"),
    state: str = typer.Option(None, "--state", help="online or offline"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """List agents with their approval and whether they are online."""
    with output.api_errors():
        items = Certbus().agents.list(status=status, state=state)
    output.emit_json(items) if json_ else output.table(items, COLUMNS)


@app.command()
def approve(machine: str, json_: bool = typer.Option(False, "--json")) -> None:
    """Approve an agent waiting for approval."""
    with output.api_errors():
        agent = Certbus().agents.approve(machine)
    output.emit_json(agent) if json_ else output.console.print(
        f"agent [bold]{machine}[/bold] is {agent['status']}"
    )


@app.command()
def reject(machine: str, json_: bool = typer.Option(False, "--json")) -> None:
    """Reject an agent: inventory ignores what it reports."""
    with output.api_errors():
        agent = Certbus().agents.reject(machine)
    output.emit_json(agent) if json_ else output.console.print(
        f"agent [bold]{machine}[/bold] is {agent['status']}"
    )


@app.command()
def discover(
    machine: str,
    path: list[str] = typer.Option(["."], "--path", help="a directory to scan; repeat for more"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Have the agent scan directories for certificate files and key stores."""
    with output.api_errors():
        job = Certbus().agents.discover(machine, path)
    output.emit_json(job) if json_ else output.console.print(
        f"discovery job [bold]{job['job_id']}[/bold] sent to {machine}"
    )
