"""``certbus certs revoke`` and ``certbus certs release``: registered onto the certs group."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer

from services.cli import output
from services.cli.sdk import Certbus

RESULT_COLUMNS = [
    ("cert_id", "id"),
    ("serial", "serial"),
    ("owner", "owner"),
    ("status", "result"),
    ("revocation.reason", "reason"),
    ("revocation.revoked_at", "revoked at"),
    ("error", "error"),
]


def _when(text: str | None, option: str) -> str | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        output.fail("invalid_date", f"{option} takes an ISO 8601 date or time, not {text!r}")
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _print_one(result: dict[str, Any]) -> None:
    revocation = result.get("revocation") or {}
    verb = "revoked" if result.get("status") == "revoked" else "already revoked"
    output.console.print(
        f"{verb} [bold]{result.get('serial')}[/bold] ({result.get('issuer_ca')}): "
        f"{revocation.get('reason')} at {revocation.get('revoked_at')}: "
        f"{output.esc(revocation.get('comment'))}"
    )


def revoke(
    cert_ids: list[str] = typer.Argument(None, help="Certificate ids, serials or thumbprints"),
    query: str = typer.Option(
        None, "--query", "-q", help="Revoke what this inventory search finds"
    ),
    reason: str = typer.Option("unspecified", "--reason", "-r", help="RFC 5280 name or 0-10"),
    comment: str = typer.Option(..., "--comment", "-c", help="Why (kept with the revocation)"),
    effective: str = typer.Option(None, "--effective", help="Revocation time (ISO 8601)"),
    invalidity: str = typer.Option(None, "--invalidity", help="When the key became unsafe"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be revoked"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Revoke a certificate, several, or everything a query finds, with a reason and a comment."""
    if bool(cert_ids) == bool(query):
        output.fail("usage", "give certificate ids or --query, not both and not neither")
    options: dict[str, Any] = {
        "reason": int(reason) if reason.isdigit() else reason,
        "comment": comment,
        "effective_at": _when(effective, "--effective"),
        "invalidity_date": _when(invalidity, "--invalidity"),
    }
    api = Certbus().revocation
    with output.api_errors():
        if cert_ids and len(cert_ids) == 1 and not dry_run:
            result = api.revoke(cert_ids[0], **options)
            output.emit_json(result) if json_ else _print_one(result)
            return
        result = api.revoke_many(cert_ids or None, query=query, dry_run=dry_run, **options)
    if json_:
        output.emit_json(result)
    else:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(result["counts"].items()))
        title = ("dry run: " if result["dry_run"] else "") + (counts or "nothing matched")
        output.table(result["items"], RESULT_COLUMNS, title=title)
    if result["counts"].get("failed"):
        raise typer.Exit(1)


def release(
    cert_id: str = typer.Argument(..., help="Certificate id, serial or thumbprint"),
    comment: str = typer.Option(None, "--comment", "-c"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """Lift a certificateHold: the certificate is good again and leaves the CRL."""
    with output.api_errors():
        result = Certbus().revocation.release(cert_id, comment=comment)
    if json_:
        output.emit_json(result)
    elif result.get("status") == "released":
        output.console.print(f"released [bold]{cert_id}[/bold] at {result.get('released_at')}")
    else:
        output.console.print(f"{cert_id} was not revoked; nothing to release")


def register(app: typer.Typer) -> None:
    app.command("revoke")(revoke)
    app.command("release")(release)
