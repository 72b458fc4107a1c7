"""The Compare access-valve call over the bus: metadata's ``compare`` RPC against ``ping``.

Both go through the same path (a core NATS request to the service, JSON in and out); ``ping``
touches no database, so the ratio is what resolving a thumbprint and comparing values costs.
Real nats-server on a free port, metadata on SQLite, 1,000 certificates enrolled first.
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
from shared.bus import make_broker, rpc_call
from shared.testing.issued import issued_event
from shared.testing.servers import NatsServer
from tests.bench.common import percentile, report

CERTS = 1000
SEQUENTIAL = int(os.environ.get("CERTBUS_BENCH_COMPARE_SEQUENTIAL", "2000"))
CONCURRENT = int(os.environ.get("CERTBUS_BENCH_COMPARE_CONCURRENT", "8000"))
IN_FLIGHT = 64


async def _latencies(call, n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - start)
    return out


async def _throughput(call, n: int) -> float:
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with slots:
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - start)


async def run(tmp: Path) -> dict:
    server = NatsServer(store_dir=tmp / "js").start()
    runtime = build(
        MetadataSettings(
            nats_url=server.url, metadata_database_url=f"sqlite:///{tmp / 'metadata.db'}"
        )
    )
    await runtime.app.start()
    client = make_broker(server.url, "bench")
    await client.start()
    try:
        certs = [issued_event(f"c{i}.example", metadata={"site": "paris"}) for i in range(CERTS)]
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await asyncio.gather(
            *(
                js.publish(
                    c.subject, c.model_dump_json().encode(), headers={"Nats-Msg-Id": c.event_id}
                )
                for c in certs
            )
        )
        await nc.close()
        while True:
            try:
                await rpc_call(client, "metadata", "get", {"cert_id": certs[-1].cert_id})
                break
            except Exception:  # noqa: BLE001 - not consumed yet
                await asyncio.sleep(0.1)

        async def compare(i: int) -> None:
            cert = certs[i % CERTS]
            result = await rpc_call(
                client,
                "metadata",
                "compare",
                {
                    "thumbprint": cert.thumbprint_sha256,
                    "expected": {"isEnabled": True, "site": "paris"},
                },
            )
            assert result["match"], result

        async def ping(_i: int) -> None:
            await rpc_call(client, "metadata", "ping", {})

        compare_lat = await _latencies(compare, SEQUENTIAL)
        ping_lat = await _latencies(ping, SEQUENTIAL)
        compare_rate = await _throughput(compare, CONCURRENT)
        ping_rate = await _throughput(ping, CONCURRENT)
    finally:
        await client.stop()
        await runtime.app.stop()
        server.stop()
    ms = 1000.0
    return {
        "compare_p50_ms": percentile(compare_lat, 50) * ms,
        "compare_p99_ms": percentile(compare_lat, 99) * ms,
        "ping_p50_ms (baseline)": percentile(ping_lat, 50) * ms,
        "ping_p99_ms (baseline)": percentile(ping_lat, 99) * ms,
        f"compare_per_s ({IN_FLIGHT} in flight)": compare_rate,
        f"ping_per_s ({IN_FLIGHT} in flight, baseline)": ping_rate,
        "throughput_ratio_compare_over_ping": compare_rate / ping_rate,
        "sequential": SEQUENTIAL,
        "concurrent": CONCURRENT,
        "certificates": CERTS,
    }


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return report("metadata_compare", asyncio.run(run(Path(tmp))))


if __name__ == "__main__":
    main()
