from __future__ import annotations

import typer

from services.cli import output
from services.cli.sdk import Certbus

NAME = "stores"
app = typer.Typer(no_args_is_help=True, help="Certificate stores on machines.")

COLUMNS = [
    ("id", "id"),
    ("machine", "machine"),
    ("store_type", "type"),
    ("store_path", "path"),
    ("status", "status"),
    ("entries", "entries"),
    ("inventoried_at", "inventoried"),
]


@app.command("list")
def list_(
    machine: str = typer.Option(None, "--machine"),
    status: str = typer.Option(None, "--status", help="approved or discovered"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """List stores, optionally one machine's."""
    with output.api_errors():
        items = Certbus().stores.list(machine=machine, status=status)
    output.emit_json(items) if json_ else output.table(items, COLUMNS)


@app.command()
def add(
    machine: str,
    store_path: str,
    store_type: str = typer.Option("pem", "--type", help="pem, pkcs12 or jks"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Add a store to a machine; its agent creates it."""
    with output.api_errors():
        store = Certbus().stores.add(machine, store_path, store_type=store_type)
    output.emit_json(store) if json_ else output.console.print(
        f"store [bold]{store['id']}[/bold] ({store_type} {store_path} on {machine}); "
        f"create job {store['job']['job_id']}"
    )


@app.command()
def inventory(
    store_id: str,
    wait: bool = typer.Option(False, "--wait", help="wait for the agent's report"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Have the store's agent report everything in it."""
    with output.api_errors():
        cb = Certbus()
        job = cb.stores.inventory(store_id)
        if wait:
            job = cb.jobs.wait(job["job_id"])
    if json_:
        output.emit_json(job)
        return
    output.console.print(f"inventory job [bold]{job['job_id']}[/bold]: {job['status']}")
    entries = (job.get("result") or {}).get("entries", [])
    for entry in entries:
        output.console.print(
            f"  {output.esc(entry['alias'])}  {entry['serial']}  "
            f"{output.esc(entry['subject'])}  until {entry['not_after']}"
        )
    total = (job.get("result_truncated") or {}).get("entries")
    if total:
        output.console.print(
            f"  ({len(entries)} of {total} shown; certbus certs search "
            f"'Machine -eq \"{job['machine']}\"' lists them all)"
        )


@app.command()
def approve(store_id: str, json_: bool = typer.Option(False, "--json")) -> None:
    """Approve a store found by discovery."""
    with output.api_errors():
        store = Certbus().stores.approve(store_id)
    output.emit_json(store) if json_ else output.console.print(
        f"store [bold]{store_id}[/bold] is {store['status']}"
    )


@app.command()
def enroll(
    store_id: str,
    template: str = typer.Option(..., "--template"),
    subject: str = typer.Option(..., "--subject", help="e.g. CN=alice"),
    san: list[str] = typer.Option([], "--san", help="email:x, dns:x, uri:x or ip:x; repeat"),
    alias: str = typer.Option(None, "--alias"),
    owner: str = typer.Option(None, "--owner"),
    key_type: str = typer.Option("ec-p256", "--key-type"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Issue a certificate into the store; the key is made on the machine and stays there."""
    with output.api_errors():
        sent = Certbus().stores.enroll(
            store_id, template, subject, sans=san, alias=alias, owner=owner, key_type=key_type
        )
    output.emit_json(sent) if json_ else output.console.print(
        f"request [bold]{sent['request_id']}[/bold]: job {sent['job']['job_id']} "
        f"({'sent' if sent['created'] else 'already sent'})"
    )
