"""Job fan-out: a renewal pushed to 200 agents on a real nats-server.

Inventory (its own process, SQLite) first receives 200 onboardings at once (timed too: each
machine's agent gets a re-enrollment job, makes a key and a CSR, a stand-in issuer signs, the
agent installs). Then one ``renewals.start`` request renews every certificate where it lives:
each of the 200 agents (the real agent runtime, in-process, each with its own NATS connection
and durable consumer) gets a re-enrollment job for its certificate, makes a new key and CSR, the
stand-in issuer signs, inventory sends the install job, the agent replaces the certificate
under the same alias and reports; inventory retires each old certificate as superseded.
Measured: time from the request until every agent reported the new certificate installed (and
until every old one was retired).

The baseline, in the same run and on the same server: the transport floor — a job published to
each of 200 durable consumers (raw nats-py) that each answer with one completion event.

    CERTBUS_BENCH_AGENTS=200 python -m tests.bench fanout
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from services.agent.app import build as build_agent
from services.agent.settings import AgentSettings
from shared import subjects
from shared.bus import ensure_streams
from shared.events import CertRequested, UserOnboarded
from shared.testing.servers import NatsServer
from tests.bench.common import report
from tests.inventory_kit import TestCA

AGENTS = int(os.environ.get("CERTBUS_BENCH_AGENTS", "200"))


async def stand_in_issuer(nc: Any, ca: TestCA, stop: asyncio.Event) -> None:
    js = nc.jetstream()
    sub = await js.pull_subscribe(subjects.CERT_REQUESTED, durable="bench-issuer")
    while not stop.is_set():
        try:
            msgs = await sub.fetch(100, timeout=0.2)
        except TimeoutError:
            continue
        issued = [ca.issue(CertRequested.model_validate_json(m.data)) for m in msgs]
        await asyncio.gather(
            *(
                js.publish(
                    e.subject, e.model_dump_json().encode(), headers={"Nats-Msg-Id": e.event_id}
                )
                for e in issued
            )
        )
        await asyncio.gather(*(m.ack() for m in msgs))


async def count_until(
    nc: Any, subject: str, n: int, marks: dict[str, float], key: str, kind: str | None = None
) -> None:
    sub = await nc.jetstream().pull_subscribe(subject, durable=f"bench-count-{key}")
    seen = 0
    while seen < n:
        try:
            msgs = await sub.fetch(min(500, n - seen), timeout=0.5)
        except TimeoutError:
            continue
        seen += sum(1 for m in msgs if kind is None or json.loads(m.data).get("kind") == kind)
        await asyncio.gather(*(m.ack() for m in msgs))
    marks[key] = time.perf_counter()


async def until_located(nc: Any, n: int) -> None:
    """Until inventory has recorded where every certificate is (installs are applied after the
    agents report them)."""
    for _ in range(600):
        reply = await nc.request(
            subjects.rpc("inventory", "certs.list"),
            json.dumps({"query": "Store -ne NULL", "limit": 1}).encode(),
            timeout=10,
        )
        if json.loads(reply.data)["result"]["total"] >= n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("inventory did not record every installed certificate")


async def start_inventory(url: str, work: Path) -> subprocess.Popen[bytes]:
    """Inventory as its own process, as in production (it must not share the agents' loop)."""
    env = {
        **os.environ,
        "CERTBUS_NATS_URL": url,
        "CERTBUS_LOG_LEVEL": "WARNING",
        "CERTBUS_INVENTORY_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'inventory.db'}",
    }
    log = open(work / "inventory.log", "wb")  # noqa: SIM115, ASYNC230 - the child owns it
    proc = subprocess.Popen([sys.executable, "-m", "services.inventory"], env=env,  # noqa: ASYNC220
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    nc = await nats.connect(url)
    try:
        for _ in range(300):
            try:
                await nc.request(subjects.rpc("inventory", "ping"), b"{}", timeout=0.5)
                return proc
            except Exception:  # noqa: BLE001 - not up yet
                await asyncio.sleep(0.1)
    finally:
        await nc.close()
    proc.kill()
    raise RuntimeError("inventory did not start")


async def certbus_fanout(url: str, work: Path) -> dict[str, Any]:
    inventory = await start_inventory(url, work)
    try:
        return await _fanout(url, work)
    finally:  # a failed run must not leave inventory running
        inventory.terminate()
        try:
            inventory.wait(30)
        except subprocess.TimeoutExpired:
            inventory.kill()


async def _fanout(url: str, work: Path) -> dict[str, Any]:
    machines = [f"bench-{i:03d}.example.com" for i in range(AGENTS)]
    agents = [build_agent(AgentSettings(nats_url=url, machine=m, root=work / m,
                                        heartbeat_seconds=300)) for m in machines]  # fmt: skip
    started = time.perf_counter()
    for a in agents:
        await a.app.start()
    print(f"  {AGENTS} agents started in {time.perf_counter() - started:.1f}s", flush=True)
    nc = await nats.connect(url)
    stop = asyncio.Event()
    issuer = asyncio.create_task(stand_in_issuer(nc, TestCA(), stop))
    marks: dict[str, float] = {}
    watchers = [
        asyncio.create_task(
            count_until(nc, subjects.AGENT_JOBS_WILDCARD, AGENTS, marks, "jobs", "reenroll")
        ),
        asyncio.create_task(count_until(nc, subjects.CERT_REQUESTED, AGENTS, marks, "csrs")),
        asyncio.create_task(count_until(nc, subjects.CERT_ISSUED, AGENTS, marks, "issued")),
        asyncio.create_task(count_until(nc, subjects.CERT_INSTALLED, AGENTS, marks, "installed")),
    ]
    await asyncio.sleep(0.5)
    js = nc.jetstream()
    events = [UserOnboarded(user=f"user{i:03d}", email=f"user{i:03d}@example.com",
                            devices=[m]) for i, m in enumerate(machines)]  # fmt: skip
    push = time.perf_counter()
    await asyncio.gather(
        *(
            js.publish(e.subject, e.model_dump_json().encode(), headers={"Nats-Msg-Id": e.event_id})
            for e in events
        )
    )
    await asyncio.wait_for(asyncio.gather(*watchers), timeout=600)
    onboarding = {
        "onboarding_all_reenroll_jobs_sent_seconds": round(marks["jobs"] - push, 3),
        "onboarding_all_installed_seconds": round(marks["installed"] - push, 3),
    }
    took = onboarding["onboarding_all_installed_seconds"]
    print(f"  onboarding: all {AGENTS} installed in {took}s", flush=True)

    # The renewal: one request renews every certificate where it lives (new key on each
    # machine, CSR, issue, install in place), then retires the old ones as superseded.
    await until_located(nc, AGENTS)
    marks.clear()
    total = 2 * AGENTS  # the counters read each subject from its start
    watchers = [
        asyncio.create_task(count_until(nc, subjects.AGENT_JOBS_WILDCARD, total, marks,
                                        "r-jobs", "reenroll")),
        asyncio.create_task(count_until(nc, subjects.CERT_ISSUED, total, marks, "r-issued")),
        asyncio.create_task(count_until(nc, subjects.CERT_INSTALLED, total, marks, "r-installed")),
        asyncio.create_task(count_until(nc, subjects.CERT_REVOCATION_REQUESTED, AGENTS, marks,
                                        "r-superseded")),
    ]  # fmt: skip
    await asyncio.sleep(0.5)
    push = time.perf_counter()
    reply = await nc.request(
        subjects.rpc("inventory", "renewals.start"),
        json.dumps({"query": "Status -eq active", "reason": "bench"}).encode(),
        timeout=120,
    )
    answered = time.perf_counter()
    sent = json.loads(reply.data)["result"]["jobs_sent"]
    if sent != AGENTS:
        raise AssertionError(f"the renewal sent {sent} jobs, not {AGENTS}")
    await asyncio.wait_for(asyncio.gather(*watchers), timeout=600)
    stop.set()
    await issuer
    await nc.close()
    renewed = sum(1 for m in machines if (work / m / "certs" / "user-client").is_dir())
    for a in agents:
        await a.app.stop()
    return {
        "agents": AGENTS,
        "renewal_request_answered_seconds": round(answered - push, 3),
        "renewal_all_reenroll_jobs_sent_seconds": round(marks["r-jobs"] - push, 3),
        "renewal_all_issued_seconds": round(marks["r-issued"] - push, 3),
        "renewal_all_installed_seconds": round(marks["r-installed"] - push, 3),
        "renewal_all_old_retired_seconds": round(marks["r-superseded"] - push, 3),
        **onboarding,
        "stores_written": renewed,
    }


async def transport_floor(url: str) -> float:
    """Raw nats-py: a job to each of N durable consumers, each answering one completion."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    machines = [f"floor-{i:03d}" for i in range(AGENTS)]
    subs = [await js.pull_subscribe(subjects.agent_jobs(m), durable=f"floor-{i}")
            for i, m in enumerate(machines)]  # fmt: skip
    done = await js.pull_subscribe(subjects.AGENT_JOB_COMPLETED, durable="floor-done")

    async def agent(sub: Any, machine: str) -> None:
        while True:
            try:
                (msg,) = await sub.fetch(1, timeout=5)
                break
            except TimeoutError:
                continue
        body = json.dumps(
            {"job_id": json.loads(msg.data)["job_id"], "machine": machine, "kind": "reenroll"}
        ).encode()
        await js.publish(subjects.AGENT_JOB_COMPLETED, body)
        await msg.ack()

    workers = [asyncio.create_task(agent(s, m)) for s, m in zip(subs, machines, strict=True)]
    await asyncio.sleep(0.2)
    start = time.perf_counter()
    await asyncio.gather(
        *(js.publish(subjects.agent_jobs(m), json.dumps({"job_id": m}).encode()) for m in machines)
    )
    seen = 0
    while seen < AGENTS:
        try:
            msgs = await done.fetch(AGENTS - seen, timeout=1)
        except TimeoutError:
            continue
        seen += len(msgs)
    elapsed = time.perf_counter() - start
    await asyncio.gather(*workers)
    await nc.close()
    return elapsed


async def run() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="certbus-fanout-"))
    server = NatsServer(store_dir=work / "js", log_file=work / "nats.log").start()
    try:
        await ensure_streams(server.url)
        floor = await transport_floor(server.url)
        figures = await certbus_fanout(server.url, work)
    finally:
        server.stop()
    figures["baseline_transport_round_trip_seconds"] = round(floor, 3)
    figures["ratio_renewal_installed_vs_transport"] = round(
        figures["renewal_all_installed_seconds"] / floor, 1
    )
    return figures


def main() -> dict[str, Any]:
    return report("job_fanout", asyncio.run(run()))


if __name__ == "__main__":
    main()
