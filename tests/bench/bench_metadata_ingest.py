"""cert.issued consumed by metadata (projection, values, history on SQLite) per second.

The baseline pulls and acknowledges the same messages from the same stream with nats-py and
does nothing else, so the ratio is what metadata's bookkeeping costs per issued certificate.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import nats

from services.metadata.app import build
from services.metadata.settings import MetadataSettings
from shared import subjects
from shared.bus import ensure_streams, make_broker, rpc_call
from shared.testing.issued import issued_event
from shared.testing.servers import NatsServer
from tests.bench.common import report

EVENTS = int(os.environ.get("CERTBUS_BENCH_METADATA_EVENTS", "5000"))


async def _baseline(url: str) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        subjects.CERT_ISSUED,
        durable="bench-baseline",
        stream=subjects.stream_for(subjects.CERT_ISSUED),
    )
    start, seen = time.perf_counter(), 0
    while seen < EVENTS:
        msgs = await sub.fetch(100, timeout=5)
        for m in msgs:
            await m.ack()
        seen += len(msgs)
    rate = EVENTS / (time.perf_counter() - start)
    await nc.close()
    return rate


async def _consumed(url: str) -> int:
    nc = await nats.connect(url)
    info = await nc.jetstream().consumer_info(
        subjects.stream_for(subjects.CERT_ISSUED),
        subjects.durable_name("metadata", subjects.CERT_ISSUED),
    )
    await nc.close()
    return info.ack_floor.stream_seq


async def run(tmp: Path) -> dict:
    server = NatsServer(store_dir=tmp / "js").start()
    try:
        await ensure_streams(server.url)
        events = [
            issued_event(
                f"c{i}.example",
                owner=f"user{i % 100}",
                metadata={"site": "paris", "costCenter": "42"},
            )
            for i in range(EVENTS)
        ]
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        for i in range(0, EVENTS, 500):
            await asyncio.gather(
                *(
                    js.publish(
                        e.subject, e.model_dump_json().encode(), headers={"Nats-Msg-Id": e.event_id}
                    )
                    for e in events[i : i + 500]
                )
            )
        await nc.close()
        runtime = build(
            MetadataSettings(nats_url=server.url, metadata_database_url=f"sqlite:///{tmp / 'm.db'}")
        )
        start = time.perf_counter()
        await runtime.app.start()
        while await _consumed(server.url) < EVENTS:  # noqa: ASYNC110 - polls the server
            await asyncio.sleep(0.05)
        rate = EVENTS / (time.perf_counter() - start)
        client = make_broker(server.url, "bench")
        await client.start()
        last = await rpc_call(client, "metadata", "get", {"cert_id": events[-1].cert_id})
        await client.stop()
        await runtime.app.stop()
        baseline = await _baseline(server.url)
    finally:
        server.stop()
    return {
        "metadata_cert_issued_per_s": rate,
        "pull_and_ack_only_per_s (baseline)": baseline,
        "ratio_metadata_over_baseline": rate / baseline,
        "events": EVENTS,
        "last_certificate_fields": last["fields"],
    }


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return report("metadata_ingest", asyncio.run(run(Path(tmp))))


if __name__ == "__main__":
    main()
