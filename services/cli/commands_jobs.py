from __future__ import annotations

import typer

from services.cli import output
from services.cli.sdk import Certbus

NAME = "jobs"
app = typer.Typer(no_args_is_help=True, help="Jobs sent to agents.")

COLUMNS = [
    ("job_id", "job"),
    ("machine", "machine"),
    ("kind", "kind"),
    ("status", "status"),
    ("error", "error"),
    ("updated_at", "updated"),
]


@app.command("list")
def list_(
    machine: str = typer.Option(None, "--machine"),
    status: str = typer.Option(None, "--status", help="sent, completed or failed"),
    kind: str = typer.Option(None, "--kind"),
    limit: int = typer.Option(100, "--limit"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """List jobs, newest first."""
    with output.api_errors():
        items = Certbus().jobs.list(machine=machine, status=status, kind=kind, limit=limit)
    output.emit_json(items) if json_ else output.table(items, COLUMNS)


@app.command()
def show(job_id: str, json_: bool = typer.Option(False, "--json")) -> None:
    """One job: what was asked and what the agent answered."""
    with output.api_errors():
        job = Certbus().jobs.get(job_id)
    if json_:
        output.emit_json(job)
        return
    for key in (
        "job_id",
        "machine",
        "kind",
        "status",
        "request_id",
        "cert_id",
        "target",
        "error_code",
        "error",
        "created_at",
        "updated_at",
    ):
        output.console.print(f"[bold]{key:>12}[/bold]  {output.esc(job.get(key))}")
    if job.get("result"):
        output.emit_json(job["result"])
