"""Webhook deliveries per second through the notifier, against plain HTTP posting.

The notifier consumes ``cert.issued`` from a real nats-server, claims each delivery in its
log (SQLite), POSTs it, marks it sent and stages ``notification.sent``. The baseline POSTs the
same bodies to the same local server with httpx at the same concurrency, with no bus and
no log, so the ratio is what exactly-once bookkeeping costs.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import httpx
import nats

from services.notifier.app import build
from services.notifier.settings import NotifierSettings
from shared.bus import ensure_streams
from shared.testing.issued import issued_event
from shared.testing.servers import NatsServer
from shared.testing.webhooks import WebhookSink
from tests.bench.common import report

EVENTS = int(os.environ.get("CERTBUS_BENCH_NOTIFIER_EVENTS", "1000"))
CONCURRENCY = 16


async def _baseline(url: str, bodies: list[dict]) -> float:
    slots = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient() as client:

        async def post(body: dict) -> None:
            async with slots:
                (await client.post(url, json=body)).raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(post(b) for b in bodies))
        return len(bodies) / (time.perf_counter() - start)


async def run(tmp: Path) -> dict:
    server = NatsServer(store_dir=tmp / "js").start()
    sink = WebhookSink().start()
    await ensure_streams(server.url)
    events = [issued_event(f"c{i}.example", owner="bench") for i in range(EVENTS)]
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await asyncio.gather(
        *(
            js.publish(e.subject, e.model_dump_json().encode(), headers={"Nats-Msg-Id": e.event_id})
            for e in events
        )
    )
    await nc.close()
    runtime = build(
        NotifierSettings(
            nats_url=server.url,
            notifier_database_url=f"sqlite:///{tmp / 'notifier.db'}",
            notifier_webhook_urls=sink.url,
            notifier_concurrency=CONCURRENCY,
        )
    )
    try:
        start = time.perf_counter()
        await runtime.app.start()
        while len(sink.accepted) < EVENTS:  # noqa: ASYNC110 - the sink runs in another thread
            await asyncio.sleep(0.01)
        notifier_rate = EVENTS / (time.perf_counter() - start)
        await runtime.app.stop()
        delivered_once = len({r.headers["Idempotency-Key"] for r in sink.accepted}) == EVENTS
        sink.requests.clear()
        bodies = [{"subject": e.subject, "event": e.model_dump(mode="json")} for e in events]
        baseline_rate = await _baseline(sink.url, bodies)
    finally:
        sink.stop()
        server.stop()
    return {
        "notifier_deliveries_per_s": notifier_rate,
        f"plain_httpx_posts_per_s ({CONCURRENCY} in flight, baseline)": baseline_rate,
        "ratio_notifier_over_baseline": notifier_rate / baseline_rate,
        "events": EVENTS,
        "each_event_delivered_once": delivered_once,
    }


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return report("notifier_webhooks", asyncio.run(run(Path(tmp))))


if __name__ == "__main__":
    main()
