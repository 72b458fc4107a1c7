from __future__ import annotations

import typer

from services.cli import output
from services.cli.sdk import Certbus

NAME = "notifications"
app = typer.Typer(no_args_is_help=True, help="The notifier's deliveries and subscriptions.")


@app.command()
def deliveries(
    event_id: str = typer.Option(None, "--event"),
    subject: str = typer.Option(None, "--subject"),
    status: str = typer.Option(None, "--status", help="sending, sent, retrying or failed"),
    limit: int = typer.Option(100, "--limit"),
    json_: bool = typer.Option(False, "--json"),
) -> None:
    """The delivery log, newest first."""
    with output.api_errors():
        page = Certbus().notifications.deliveries(
            event_id=event_id, subject=subject, status=status, limit=limit
        )
    if json_:
        output.emit_json(page)
        return
    output.table(
        page["items"],
        [
            ("created_at", "when"),
            ("subject", "subject"),
            ("event_id", "event"),
            ("channel", "channel"),
            ("status", "status"),
            ("attempts", "attempts"),
            ("last_error", "last error"),
        ],
        title=f"{page['total']} deliveries",
    )


@app.command()
def subscriptions(json_: bool = typer.Option(False, "--json")) -> None:
    """Which subjects go to which channel."""
    with output.api_errors():
        items = Certbus().notifications.subscriptions()
    if json_:
        output.emit_json(items)
    else:
        output.table(
            items,
            [
                ("channel", "channel"),
                ("channel_type", "type"),
                ("subjects", "subjects"),
                ("owners", "owners"),
                ("templates", "templates"),
            ],
        )
