"""``certbus renewals``: renew installed certificates where they live, and follow progress."""

from __future__ import annotations

import typer

from services.cli import output
from services.cli.sdk import Certbus

NAME = "renewals"
app = typer.Typer(no_args_is_help=True, help="Renew installed certificates where they live.")

PLAN_COLUMNS = [("cert_id", "certificate"), ("machine", "machine"), ("store_path", "store"),
                ("alias", "alias"), ("key_type", "new key"), ("template", "template")]  # fmt: skip
SKIP_COLUMNS = [("cert_id", "certificate"), ("reason", "not renewed because")]
COLUMNS = [("old_cert_id", "certificate"), ("new_cert_id", "renewed as"), ("machine", "machine"),
           ("alias", "alias"), ("status", "status"), ("error", "error"),
           ("updated_at", "updated")]  # fmt: skip


@app.command()
def start(
    query: str = typer.Argument(None, help="Inventory search, e.g. 'NotAfter -lt \"%TODAY+30%\"'"),
    cert_ids: list[str] = typer.Option(None, "--id", help="A certificate id (repeatable)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show the plan"),
    reason: str = typer.Option(None, "--reason", help="Why (kept with each renewal)"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Renew what a query (or --id) selects, in every store each certificate is installed in.

    The key is made on each machine; the new certificate replaces the old one under the same
    alias; the old one is revoked as superseded once it is replaced everywhere. Running the
    same command again resumes and never renews twice.
    """
    if bool(query) == bool(cert_ids):
        output.fail("usage", "give a query or --id, not both and not neither", exit_code=2)
    with output.api_errors():
        result = Certbus().renewals.start(query, cert_ids=cert_ids or None, dry_run=dry_run,
                                          reason=reason)  # fmt: skip
    if json_:
        output.emit_json(result)
        return
    title = "plan (dry run)" if dry_run else f"{result['jobs_sent']} job(s) sent"
    output.table(result["planned"], PLAN_COLUMNS, title=title)
    if result["skipped"]:
        output.table(result["skipped"], SKIP_COLUMNS, title="skipped")


@app.command("list")
def list_(
    status: str = typer.Option(None, "--status", help="planned, issued, installed or failed"),
    cert_id: str = typer.Option(None, "--cert", help="Renewals of this certificate"),
    machine: str = typer.Option(None, "--machine"),
    limit: int = typer.Option(100, "--limit"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Renewals, newest first, with the campaign's progress."""
    with output.api_errors():
        result = Certbus().renewals.list(status=status, cert_id=cert_id, machine=machine,
                                         limit=limit)  # fmt: skip
    if json_:
        output.emit_json(result)
        return
    progress = ", ".join(f"{n} {s}" for s, n in sorted(result["progress"].items())) or "none"
    output.table(result["items"], COLUMNS, title=f"renewals: {progress}")
