"""Bulk issuance through the bus against the raw in-process issuance speed.

10,000 ``cert.requested`` with pre-made CSRs go to an issuer running as its own process, then
again to two replicas sharing the durable consumer; the clock runs from the first publish to
the last ``cert.issued`` stored (received from the stream). The baseline, measured in the same
run with the same CA key, is parse + verify + policy + build + sign in one process, no bus.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
from cryptography import x509

from services.issuer.ca import open_hierarchy, select_cas
from services.issuer.issuance import Enrollment, Issuer
from services.issuer.settings import REPO_ROOT
from services.issuer.templates import TemplateCatalog
from services.issuer.testing import user_csr
from shared import subjects
from shared.bus import RpcError, make_broker, rpc_call
from shared.events import CertRequested
from shared.testing.servers import NatsServer
from tests.bench.common import Timer, report

REQUESTS = int(os.environ.get("CERTBUS_BENCH_REQUESTS", "10000"))
IN_FLIGHT = 1000
REPLICAS = int(os.environ.get("CERTBUS_BENCH_REPLICAS", "2"))


def start_issuer(
    tmp: Path, nats_url: str, passphrase: str, database_url: str | None = None
) -> subprocess.Popen:
    env = {
        **os.environ,
        "CERTBUS_NATS_URL": nats_url,
        "CERTBUS_VAR_DIR": str(tmp / "var"),
        "CERTBUS_CA_PASSPHRASE": passphrase,
        "CERTBUS_ISSUER_CAS": '["issuing-ec"]',
        "CERTBUS_LOG_LEVEL": "WARNING",
        "CERTBUS_PUBLIC_BASE_URL": "http://pki.test",
    }
    if database_url:
        env["CERTBUS_ISSUER_DATABASE_URL"] = database_url
    profile = os.environ.get("CERTBUS_BENCH_PROFILE")
    wrap = ["-m", "cProfile", "-o", profile] if profile else []
    return subprocess.Popen(
        [sys.executable, *wrap, "-m", "services.issuer"], env=env, cwd=REPO_ROOT
    )


async def wait_for_ping(nats_url: str, service: str = "issuer", within: float = 60.0) -> None:
    broker = make_broker(nats_url, "bench")
    await broker.start()
    try:
        deadline = time.monotonic() + within
        while True:
            try:
                await rpc_call(broker, service, "ping", {}, timeout=1.0)
                return
            except RpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await broker.stop()


def raw_rate(key_dir: Path, passphrase: str, csrs: list[str]) -> float:
    cas = open_hierarchy(
        key_dir, passphrase.encode(), select_cas(["issuing-ec"]), "http://pki.test"
    )
    issuer = Issuer(cas, TemplateCatalog(REPO_ROOT / "infra/templates.yaml"), "http://pki.test")
    with Timer() as t:
        for i, csr in enumerate(csrs):
            leaf = issuer.prepare(Enrollment(f"raw-{i}", "user-client", csr, owner=f"user{i}"))
            issuer.sign(leaf, x509.random_serial_number())
    return len(csrs) / t.seconds


async def bus_rate(nats_url: str, csrs: list[str], run: str) -> tuple[float, float]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    done = asyncio.Event()
    count = 0
    last = 0.0

    async def on_issued(_msg) -> None:
        nonlocal count, last
        count += 1
        last = time.perf_counter()
        if count >= len(csrs):
            done.set()

    await nc.subscribe(subjects.CERT_ISSUED, cb=on_issued)
    events = [
        CertRequested(
            request_id=f"bench-{run}-{i}", template="user-client", csr_pem=csr, owner=f"user{i}"
        )
        for i, csr in enumerate(csrs)
    ]
    payloads = [(e.event_id, e.model_dump_json().encode()) for e in events]
    start = time.perf_counter()
    for i in range(0, len(payloads), IN_FLIGHT):
        await asyncio.gather(
            *(
                js.publish(subjects.CERT_REQUESTED, body, headers={"Nats-Msg-Id": eid})
                for eid, body in payloads[i : i + IN_FLIGHT]
            )
        )
    published = time.perf_counter()
    await asyncio.wait_for(done.wait(), timeout=600)
    await nc.close()
    return len(csrs) / (last - start), len(csrs) / (published - start)


async def run() -> dict:
    """One issuer process first, then with a second replica sharing the durable consumer."""
    tmp = Path(tempfile.mkdtemp(prefix="certbus-bench-"))
    server = NatsServer(store_dir=tmp / "js").start()
    passphrase = secrets.token_urlsafe(16)
    database_url = os.environ.get("CERTBUS_BENCH_DATABASE_URL")
    procs = [start_issuer(tmp, server.url, passphrase, database_url)]
    figures: dict[str, object] = {"requests": REQUESTS}
    try:
        with Timer() as making:
            csrs = [user_csr(f"user{i}") for i in range(REQUESTS)]
        figures["csr_preparation_seconds (not measured)"] = making.seconds
        await wait_for_ping(server.url)
        sample = csrs[: min(REQUESTS, 3000)]
        raw = raw_rate(tmp / "var" / "issuer" / "keys", passphrase, sample)
        figures["baseline_raw_before_per_second"] = raw
        for replicas in range(1, REPLICAS + 1):
            while len(procs) < replicas:
                # A replica finds the CAs the first process made and joins its durable consumer.
                procs.append(start_issuer(tmp, server.url, passphrase, database_url))
                await asyncio.sleep(3.0)
            bus, publish = await bus_rate(server.url, csrs, f"r{replicas}")
            figures[f"bus_per_second_{replicas}_issuer"] = bus
            figures[f"publish_rate_per_second_{replicas}_issuer"] = publish
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        procs = []
        # Measured again once the issuers are gone; the better of the two is the baseline, so
        # a busy moment during one measurement cannot flatter the ratio.
        after = raw_rate(tmp / "var" / "issuer" / "keys", passphrase, sample)
        figures["baseline_raw_after_per_second"] = after
        raw = max(raw, after)
        figures["baseline_raw_in_process_per_second"] = raw
        for replicas in range(1, REPLICAS + 1):
            figures[f"ratio_bus_over_raw_{replicas}_issuer"] = (
                figures[f"bus_per_second_{replicas}_issuer"] / raw  # type: ignore[operator]
            )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        server.stop()
    figures["target_ratio"] = 0.5
    figures["database"] = "postgresql" if database_url else "sqlite"
    return report("issuance_bus", figures)


def main() -> dict:
    return asyncio.run(run())


if __name__ == "__main__":
    main()
