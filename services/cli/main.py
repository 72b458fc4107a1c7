"""The ``certbus`` command line, built on the SDK. Every command takes ``--json``."""

from __future__ import annotations

import importlib

import typer

from services.cli import output
from services.cli.sdk import Certbus

app = typer.Typer(no_args_is_help=True, help="certbus: event-driven certificate lifecycle.")

# Each module exposes ``app`` (a typer.Typer) and ``NAME``, the command group it adds.
COMMAND_MODULES = [
    "services.cli.commands_hr",
    "services.cli.commands_certs",
    "services.cli.commands_agents",
    "services.cli.commands_stores",
    "services.cli.commands_jobs",
    "services.cli.commands_renewals",
    "services.cli.commands_users",
    "services.cli.commands_devices",
    "services.cli.commands_cas",
    "services.cli.commands_templates",
    "services.cli.commands_enroll",
    "services.cli.commands_metadata",
    "services.cli.commands_notifications",
]


def client() -> Certbus:
    return Certbus()


@app.command()
def health(json_: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """Show whether the gateway and every service answer."""
    with output.api_errors():
        data = client().health()
    if json_:
        output.emit_json(data)
    else:
        rows = [{"service": k, **v} for k, v in data.get("services", {}).items()]
        output.table(
            rows,
            [
                ("service", "service"),
                ("ok", "ok"),
                ("instance", "instance"),
                ("uptime_seconds", "uptime s"),
            ],
            title=f"status: {data.get('status')}",
        )
    if data.get("status") != "ok":
        raise typer.Exit(1)


for _name in COMMAND_MODULES:
    _module = importlib.import_module(_name)
    app.add_typer(_module.app, name=_module.NAME)


def run() -> None:
    app()
