"""The delivery log's claims and the webhook channel against a real local HTTP server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.notifier.channels import (
    Notification,
    PermanentFailure,
    TransientFailure,
    WebhookChannel,
    webhook_name,
)
from services.notifier.deliveries import Claim, DeliveryLog, Status
from services.notifier.tables import TABLES
from shared.db import Database
from shared.testing.webhooks import WebhookSink

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}")
    await database.create_all(tables=TABLES)
    yield database
    await database.dispose()


async def _claim(db: Database, at: datetime, event_id: str = "e1") -> Claim:
    async with db.transaction() as s:
        return await DeliveryLog(s, at).claim(
            event_id=event_id,
            channel="webhook:x",
            subject="cert.issued",
            correlation_id="c",
            lease=60,
        )


async def _finish(db: Database, status: Status, at: datetime = T0) -> int:
    async with db.transaction() as s:
        return await DeliveryLog(s, at).finish("e1", "webhook:x", status, "boom")


async def test_a_live_claim_makes_a_second_worker_wait_and_an_expired_one_is_taken_over(db) -> None:
    assert await _claim(db, T0) == Claim.SEND
    assert await _claim(db, T0 + timedelta(seconds=30)) == Claim.BUSY
    assert await _claim(db, T0 + timedelta(seconds=61)) == Claim.SEND


async def test_a_sent_delivery_is_never_claimed_again(db) -> None:
    await _claim(db, T0)
    assert await _finish(db, Status.RETRYING) == 1
    assert await _claim(db, T0) == Claim.SEND
    assert await _finish(db, Status.SENT) == 2
    assert await _claim(db, T0 + timedelta(days=1)) == Claim.ALREADY_DONE
    async with db.session() as s:
        items, total = await DeliveryLog(s, T0).list(status="sent")
    assert total == 1
    assert items[0]["attempts"] == 2 and items[0]["sent_at"] == T0.isoformat()


async def test_the_log_lists_newest_first_with_filters(db) -> None:
    for n in range(5):
        await _claim(db, T0, event_id=f"e{n}")
    async with db.session() as s:
        log = DeliveryLog(s, T0)
        page, total = await log.list(limit=2, offset=1)
        one, _ = await log.list(event_id="e3")
    assert total == 5 and [i["event_id"] for i in page] == ["e3", "e2"]
    assert [i["event_id"] for i in one] == ["e3"]


def test_a_webhook_channel_is_named_without_revealing_its_url() -> None:
    name = webhook_name("https://hooks.example.com/services/T000/B000/SECRET")
    assert name.startswith("webhook:hooks.example.com:") and "SECRET" not in name
    assert name == webhook_name("https://hooks.example.com/services/T000/B000/SECRET")


async def test_the_webhook_posts_the_event_with_its_idempotency_key() -> None:
    sink = WebhookSink().start()
    try:
        async with httpx.AsyncClient() as client:
            await WebhookChannel(sink.url, client).send(
                Notification("cert.revoked", "ev-1", "corr-1", {"serial": "0a"})
            )
    finally:
        sink.stop()
    [got] = sink.requests
    assert got.body == {"subject": "cert.revoked", "event": {"serial": "0a"}}
    assert got.headers["Idempotency-Key"] == "ev-1"
    assert got.headers["X-Certbus-Subject"] == "cert.revoked"
    assert got.headers["X-Certbus-Correlation-Id"] == "corr-1"


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (503, TransientFailure),
        (429, TransientFailure),
        (400, PermanentFailure),
        (404, PermanentFailure),
    ],
)
async def test_server_errors_are_transient_and_client_errors_permanent(status, failure) -> None:
    sink = WebhookSink(fail_first=1, fail_status=status).start()
    try:
        async with httpx.AsyncClient() as client:
            with pytest.raises(failure):
                await WebhookChannel(sink.url, client).send(Notification("s", "e", "c", {}))
    finally:
        sink.stop()


async def test_an_unreachable_webhook_is_a_transient_failure() -> None:
    sink = WebhookSink().start()
    url = sink.url
    sink.stop()
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(TransientFailure):
            await WebhookChannel(url, client).send(Notification("s", "e", "c", {}))
