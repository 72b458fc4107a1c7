"""The notifier delivering to real webhook servers, against a real nats-server and database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from services.notifier.app import SUBJECTS, build
from services.notifier.settings import NotifierSettings
from shared import subjects
from shared.bus import make_broker, rpc_call
from shared.events import CertExpiring, CertRevoked, Event, UserOffboardingCompleted
from shared.pki import RevocationReason
from shared.testing.issued import issued_event
from shared.testing.webhooks import WebhookSink

pytestmark = pytest.mark.integration


@pytest.fixture
def sinks() -> Iterator[list[WebhookSink]]:
    started = [WebhookSink().start(), WebhookSink().start()]
    yield started
    for sink in started:
        sink.stop()


async def _notifier(nats_url: str, database_url: str, urls: list[str]):
    runtime = build(
        NotifierSettings(
            nats_url=nats_url,
            notifier_database_url=database_url,
            notifier_webhook_urls=",".join(urls),
            max_deliver=6,
        )
    )
    await runtime.app.start()
    return runtime


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Any]:
    broker = make_broker(nats_url, "test-client")
    await broker.start()
    yield broker
    await broker.stop()


async def _publish(nc, event: Event, msg_id: str | None = None) -> None:
    await nc.jetstream().publish(
        event.subject_name(),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id or event.event_id},
    )


async def _until(predicate, attempts: int = 150) -> None:
    for _ in range(attempts):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the condition never held")


async def _sent_events(nc, n: int) -> list[dict]:
    sub = await nc.jetstream().pull_subscribe(
        subjects.NOTIFICATION_SENT,
        durable=None,
        stream=subjects.stream_for(subjects.NOTIFICATION_SENT),
    )
    out: list[dict] = []
    for _ in range(60):
        try:
            msgs = await sub.fetch(100, timeout=0.8 if len(out) >= n else 0.3)
        except TimeoutError:
            if len(out) >= n:
                break
            continue
        out.extend(json.loads(m.data) for m in msgs)
    return out


def _events() -> list[Event]:
    issued = issued_event("web.example", owner="alice")
    revoked = issued.caused(
        CertRevoked,
        cert_id=issued.cert_id,
        serial=issued.serial,
        issuer_ca=issued.issuer_ca,
        reason=RevocationReason.SUPERSEDED,
        comment="renewed",
        revoked_at=issued.not_before,
    )
    completed = UserOffboardingCompleted(user="bob", found=1, revoked=1, removed=1)
    return [issued, revoked, completed]


async def test_each_event_reaches_each_webhook_exactly_once_despite_redelivery(
    nats_url: str, nats_client, database_url: str, sinks: list[WebhookSink], client
) -> None:
    runtime = await _notifier(nats_url, database_url, [s.url for s in sinks])
    try:
        events = _events()
        for ev in events:
            await _publish(nats_client, ev)
            await _publish(nats_client, ev, msg_id="republished-" + ev.event_id)
        await _until(lambda: all(len(s.accepted) >= 3 for s in sinks))
        sent = await _sent_events(nats_client, 6)
        for ev in events:
            await _publish(nats_client, ev, msg_id="late-" + ev.event_id)
        await _drained(nats_client)
        listed = await rpc_call(client, "notifier", "deliveries.list", {"status": "sent"})
    finally:
        await runtime.app.stop()

    for sink in sinks:
        assert sorted(r.headers["Idempotency-Key"] for r in sink.accepted) == sorted(
            ev.event_id for ev in events
        )
        by_key = {r.headers["Idempotency-Key"]: r for r in sink.accepted}
        for ev in events:
            got = by_key[ev.event_id]
            assert got.headers["X-Certbus-Subject"] == ev.subject_name()
            assert got.body["subject"] == ev.subject_name()
            assert got.body["event"]["event_id"] == ev.event_id
        assert by_key[events[0].event_id].body["event"]["certificate_pem"].startswith("-----BEGIN")
    assert len(sent) == 6
    assert {(s["about_event_id"], s["channel"]) for s in sent} == {
        (ev.event_id, item["channel"])
        for ev in events
        for item in listed["items"]
        if item["event_id"] == ev.event_id
    }
    assert {s["correlation_id"] for s in sent if s["about_event_id"] == events[1].event_id} == {
        events[0].correlation_id
    }
    assert listed["total"] == 6 and {i["attempts"] for i in listed["items"]} == {1}


async def _drained(nc, consumed=SUBJECTS) -> None:
    """Wait until every notifier durable has acknowledged everything in its stream."""
    js = nc.jetstream()
    for _ in range(150):
        infos = [
            await js.consumer_info(subjects.stream_for(s), subjects.durable_name("notifier", s))
            for s in consumed
        ]
        if all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the notifier never caught up")


async def test_a_failing_webhook_is_retried_until_it_accepts(
    nats_url: str, nats_client, database_url: str, client
) -> None:
    sink = WebhookSink(fail_first=3).start()
    runtime = await _notifier(nats_url, database_url, [sink.url])
    try:
        issued = issued_event("retry.example")
        await _publish(nats_client, issued)
        await _until(lambda: len(sink.accepted) == 1, attempts=200)
        await _drained(nats_client)
        listed = await rpc_call(
            client, "notifier", "deliveries.list", {"event_id": issued.event_id}
        )
    finally:
        await runtime.app.stop()
        sink.stop()
    assert [r.status for r in sink.requests] == [503, 503, 503, 200]
    assert len({r.headers["Idempotency-Key"] for r in sink.requests}) == 1
    [delivery] = listed["items"]
    assert (delivery["status"], delivery["attempts"]) == ("sent", 4)


async def test_a_webhook_that_refuses_the_event_is_not_retried_and_the_failure_announced(
    nats_url: str, nats_client, database_url: str, client
) -> None:
    sink = WebhookSink(fail_first=100, fail_status=400).start()
    runtime = await _notifier(nats_url, database_url, [sink.url])
    try:
        issued = issued_event("refused.example")
        await _publish(nats_client, issued)
        await _drained(nats_client)
        listed = await rpc_call(
            client, "notifier", "deliveries.list", {"event_id": issued.event_id}
        )
    finally:
        await runtime.app.stop()
        sink.stop()
    failed = await _collect(nats_client, subjects.NOTIFICATION_FAILED, 1)
    assert len(sink.requests) == 1
    [delivery] = listed["items"]
    assert delivery["status"] == "failed" and "HTTP 400" in delivery["last_error"]
    assert [(f["about_event_id"], f["channel"]) for f in failed] == [
        (issued.event_id, delivery["channel"])
    ]


async def test_without_a_channel_events_are_logged_and_acknowledged(
    nats_url: str, nats_client, tmp_path, caplog
) -> None:
    caplog.set_level("INFO", logger="certbus.notifier")
    runtime = await _notifier(nats_url, f"sqlite+aiosqlite:///{tmp_path / 'n.db'}", [])
    try:
        completed = UserOffboardingCompleted(user="erin", found=0, revoked=0, removed=0)
        await _publish(nats_client, completed)
        await _drained(nats_client)
    finally:
        await runtime.app.stop()
    assert any(
        "no channel wants" in r.getMessage() and completed.event_id in r.getMessage()
        for r in caplog.records
    )


async def _collect(nc, subject: str, n: int) -> list[dict]:
    sub = await nc.jetstream().pull_subscribe(
        subject, durable=None, stream=subjects.stream_for(subject)
    )
    out: list[dict] = []
    for _ in range(30):
        try:
            msgs = await sub.fetch(n, timeout=0.5)
        except TimeoutError:
            continue
        out.extend(json.loads(m.data) for m in msgs)
        if len(out) >= n:
            break
    return out


async def test_subscriptions_send_each_channel_only_what_it_asked_for(
    nats_url: str, nats_client, tmp_path, client
) -> None:
    tls, alice = WebhookSink().start(), WebhookSink().start()
    subs = tmp_path / "subscriptions.yaml"
    subs.write_text(
        "channels:\n"
        f"  tls-team: {{type: webhook, url: '{tls.url}'}}\n"
        f"  alice: {{type: webhook, url: '{alice.url}'}}\n"
        "subscriptions:\n"
        "  - {channel: tls-team, subjects: [cert.issued, cert.revoked], templates: [tls-server]}\n"
        "  - {channel: alice, subjects: ['cert.*', 'user.>'], owners: [alice]}\n"
    )
    runtime = build(
        NotifierSettings(
            nats_url=nats_url,
            notifier_database_url=f"sqlite+aiosqlite:///{tmp_path / 'n.db'}",
            notifier_subscriptions_file=subs,
        )
    )
    await runtime.app.start()
    try:
        server = issued_event("www.example.com", owner="bob", template="tls-server")
        hers = issued_event("alice.example.com", owner="alice", template="user-client")
        await _publish(nats_client, server)
        await _publish(nats_client, hers)
        await _until(lambda: len(tls.accepted) >= 1 and len(alice.accepted) >= 1)
        # Neither event carries the filtered field: the notifier knows it from cert.issued.
        revoked = server.caused(
            CertRevoked,
            cert_id=server.cert_id,
            serial=server.serial,
            issuer_ca=server.issuer_ca,
            reason=RevocationReason.SUPERSEDED,
            comment="renewed",
            revoked_at=server.not_before,
        )
        expiring = hers.caused(
            CertExpiring, cert_id=hers.cert_id, not_after=hers.not_after, days_left=3
        )
        done = UserOffboardingCompleted(user="alice", found=1, revoked=1, removed=0)
        for ev in (revoked, expiring, done):
            await _publish(nats_client, ev)
        await _until(lambda: len(tls.accepted) >= 2 and len(alice.accepted) >= 3)
        await _drained(nats_client, [ev.subject_name() for ev in (server, revoked, expiring, done)])
        described = await rpc_call(client, "notifier", "subscriptions.list", {})
    finally:
        await runtime.app.stop()
        tls.stop()
        alice.stop()
    assert [r.headers["Idempotency-Key"] for r in tls.accepted] == [
        server.event_id,
        revoked.event_id,
    ]
    assert sorted(r.headers["X-Certbus-Subject"] for r in alice.accepted) == [
        "cert.expiring",
        "cert.issued",
        "user.offboarding.completed",
    ]
    assert [(s["channel"], s["channel_type"]) for s in described["items"]] == [
        ("tls-team", "webhook"),
        ("alice", "webhook"),
    ]


async def test_two_replicas_share_the_work_and_still_send_each_event_once(
    nats_url: str, nats_client, database_url: str, sinks: list[WebhookSink]
) -> None:
    sink = sinks[0]
    replicas = [await _notifier(nats_url, database_url, [sink.url]) for _ in range(2)]
    try:
        events = [issued_event(f"r{i}.example") for i in range(60)]
        for ev in events:
            await _publish(nats_client, ev)
            await _publish(nats_client, ev, msg_id="again-" + ev.event_id)
        await _until(lambda: len(sink.accepted) >= len(events))
        await _drained(nats_client)
    finally:
        for runtime in replicas:
            await runtime.app.stop()
    keys = [r.headers["Idempotency-Key"] for r in sink.accepted]
    assert sorted(keys) == sorted(ev.event_id for ev in events)
