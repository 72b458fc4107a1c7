"""A job result larger than the bus's largest message arrives in parts, on a real nats-server
whose limit is set low, and inventory applies it once, whatever the order and repetition."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.agent.app import build as build_agent
from services.agent.pemdir import PemDirectory
from services.agent.settings import AgentSettings
from services.agent.stores import describe
from services.inventory.app import build as build_inventory
from services.inventory.settings import InventorySettings
from shared import job_results, pki, subjects
from shared.bus import ensure_streams
from shared.clock import utcnow
from shared.events import AgentJobCompleted, JobKind, StoreTarget
from shared.runtime import ServiceRuntime
from shared.testing.servers import NatsServer
from tests.conftest import _bundled_available
from tests.inventory_kit import BusReader, eventually, publish

pytestmark = pytest.mark.integration

MAX_PAYLOAD = 256 * 1024
CERTIFICATES = 400
MACHINE = "vault-01"
STORE_PATH = "etc/ssl/certs"


@pytest.fixture
def small_nats_url(tmp_path: Path) -> Iterator[str]:
    """A private nats-server that refuses any message over 256 KiB."""
    if not _bundled_available():
        pytest.skip("needs the bundled nats-server to set max_payload")
    server = NatsServer(
        store_dir=tmp_path / "jetstream", log_file=tmp_path / "nats.log", max_payload=MAX_PAYLOAD
    ).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def client(small_nats_url: str) -> AsyncIterator[Any]:
    await ensure_streams(small_nats_url)
    nc = await nats.connect(small_nats_url)
    assert nc.max_payload == MAX_PAYLOAD
    yield nc
    await nc.close()


@pytest.fixture
async def inventory(small_nats_url: str, database_url: str) -> AsyncIterator[ServiceRuntime]:
    rt = build_inventory(
        InventorySettings(nats_url=small_nats_url, inventory_database_url=database_url)
    )
    await rt.app.start()
    yield rt
    await rt.app.stop()


def foreign_certificate(cn: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = utcnow()
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=90))
            .sign(key, hashes.SHA256()))  # fmt: skip


def fill_store(store: Path, count: int) -> list[x509.Certificate]:
    store.mkdir(parents=True, exist_ok=True)
    certs = [foreign_certificate(f"svc-{i:04d}.example.com") for i in range(count)]
    for i, cert in enumerate(certs):
        (store / f"svc-{i:04d}.crt").write_text(pki.pem(cert))
    return certs


async def rpc(nc: Any, operation: str, payload: dict[str, Any]) -> Any:
    reply = await nc.request(
        subjects.rpc("inventory", operation), json.dumps(payload).encode(), timeout=10
    )
    data = json.loads(reply.data)
    assert data["ok"], data
    return data["result"]


async def finished(nc: Any, job_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        reply = await nc.request(
            subjects.rpc("inventory", "jobs.get"), json.dumps({"id": job_id}).encode(), timeout=10
        )
        job = json.loads(reply.data).get("result")  # not found yet: nothing reported so far
        return job if job and job["status"] != "sent" else None

    job = await eventually(check, within=60)
    assert job, f"job {job_id} never finished"
    return job


async def stored(nc: Any, subject: str) -> list[bytes]:
    """Every message the stream holds on ``subject``, exactly as it was published."""
    sub = await nc.jetstream().pull_subscribe(
        subject, durable="test-stored", stream=subjects.stream_for(subject)
    )
    out: list[bytes] = []
    while True:
        try:
            msgs = await sub.fetch(100, timeout=1.0)
        except TimeoutError:
            return out
        for m in msgs:
            out.append(m.data)
            await m.ack()


async def test_an_agent_inventories_a_store_too_large_for_one_message_and_inventory_gets_it_all(
    small_nats_url: str, client: Any, inventory: ServiceRuntime, tmp_path: Path
) -> None:
    root = tmp_path / MACHINE
    certs = fill_store(root / STORE_PATH, CERTIFICATES)
    agent = build_agent(
        AgentSettings(nats_url=small_nats_url, machine=MACHINE, root=root, heartbeat_seconds=0.2)
    )
    await agent.app.start()
    reader = BusReader(client)
    try:

        async def registered() -> list[dict[str, Any]]:
            return (await rpc(client, "agents.list", {}))["items"]

        assert await eventually(registered)  # only an agent that has reported can be approved
        await rpc(client, "agents.approve", {"machine": MACHINE})
        store = await rpc(client, "stores.add", {"machine": MACHINE, "store_path": STORE_PATH})
        await finished(client, store["job"]["job_id"])
        sent = await rpc(client, "stores.inventory", {"id": store["id"]})

        job = await finished(client, sent["job_id"])
        assert job["status"] == "completed", job
        messages = await stored(client, subjects.AGENT_JOB_COMPLETED)
        drifts = await reader.take(subjects.CERT_DRIFT_DETECTED, CERTIFICATES, within=30)
    finally:
        await agent.app.stop()

    parts = [AgentJobCompleted.model_validate_json(m) for m in messages]
    inventory_parts = [p for p in parts if p.job_id == sent["job_id"]]
    sizes = [len(m) for m, p in zip(messages, parts, strict=True) if p.job_id == sent["job_id"]]
    assert len(inventory_parts) > 1 and sum(sizes) > MAX_PAYLOAD  # one message would be refused
    assert all(size < MAX_PAYLOAD for size in sizes)
    assert sorted(p.part for p in inventory_parts) == list(range(1, len(inventory_parts) + 1))

    assert job["result_truncated"] == {"entries": CERTIFICATES}
    (listed,) = (await rpc(client, "stores.list", {"machine": MACHINE}))["items"]
    assert listed["entries"] == CERTIFICATES and listed["last_job_id"] == sent["job_id"]
    found = await rpc(client, "certs.list", {"query": f'Machine -eq "{MACHINE}"', "limit": 1})
    assert found["total"] == CERTIFICATES
    serials = {pki.render_serial(c.serial_number) for c in certs}
    assert {d["serial"] for d in drifts} == serials and len(drifts) == CERTIFICATES

    # Every part delivered again, last first (as if redelivered after the duplicate window):
    # the job stays done as it was and nothing is recorded or announced twice.
    await publish(client, *(redelivered(p, "again") for p in reversed(inventory_parts)))
    assert await reader.none_more(subjects.CERT_DRIFT_DETECTED, wait=3.0) == []
    again = await rpc(client, "jobs.get", {"id": sent["job_id"]})
    assert (again["status"], again["updated_at"]) == ("completed", job["updated_at"])


def redelivered(part: AgentJobCompleted, tag: str) -> AgentJobCompleted:
    """The same part under another message id: the stream's duplicate window lets it through."""
    return part.model_copy(update={"event_id": f"{tag}-{part.event_id}"})


def report(tmp_path: Path, machine: str, count: int) -> tuple[AgentJobCompleted, list[str]]:
    """An inventory report of a store of ``count`` certificates, as an agent makes it."""
    store_dir = tmp_path / machine / STORE_PATH
    certs = fill_store(store_dir, count)
    target = StoreTarget(machine=machine, store_path=STORE_PATH, alias="-")
    entries = [describe(e) for e in PemDirectory(store_dir).entries()]
    completed = AgentJobCompleted(
        job_id=f"inventory-{machine}", machine=machine, kind=JobKind.INVENTORY,
        result={"store": target.model_dump(), "entries": entries},
    )  # fmt: skip
    return completed, [pki.render_serial(c.serial_number) for c in certs]


async def test_parts_out_of_order_and_repeated_complete_the_job_once_when_the_last_arrives(
    client: Any, inventory: ServiceRuntime, tmp_path: Path
) -> None:
    machine = "ooo-01"
    completed, serials = report(tmp_path, machine, 60)
    parts = job_results.split(completed, 16 * 1024)
    assert len(parts) >= 4
    random.Random(5).shuffle(parts)
    *early, last = parts
    reader = BusReader(client)

    await publish(client, *early, early[0], early[-1])
    await publish(client, *(redelivered(p, "again") for p in early))
    assert await reader.none_more(subjects.CERT_DRIFT_DETECTED, wait=3.0) == []
    waiting = await rpc(client, "jobs.get", {"id": completed.job_id})
    assert waiting["status"] == "sent" and waiting["result"] is None

    await publish(client, last)
    job = await finished(client, completed.job_id)
    assert job["status"] == "completed"
    assert [e["serial"] for e in job["result"]["entries"]] == [
        e["serial"] for e in completed.result["entries"]
    ]
    drifts = await reader.take(subjects.CERT_DRIFT_DETECTED, len(serials))
    assert sorted(d["serial"] for d in drifts) == sorted(serials)

    await publish(client, *(redelivered(p, "late") for p in parts))
    assert await reader.none_more(subjects.CERT_DRIFT_DETECTED, wait=3.0) == []
    again = await rpc(client, "jobs.get", {"id": completed.job_id})
    assert again["updated_at"] == job["updated_at"]


async def test_parts_of_two_different_reports_of_one_job_are_never_mixed(
    client: Any, inventory: ServiceRuntime, tmp_path: Path
) -> None:
    machine = "mix-01"
    first, _ = report(tmp_path, machine, 40)
    store_dir = tmp_path / machine / STORE_PATH
    for f in sorted(store_dir.iterdir())[:10]:
        f.unlink()
    entries = [describe(e) for e in PemDirectory(store_dir).entries()]
    second = first.model_copy(update={"result": {**first.result, "entries": entries}})
    old, new = job_results.split(first, 16 * 1024), job_results.split(second, 16 * 1024)
    assert old[0].result_sha256 != new[0].result_sha256

    await publish(client, *old[:-1], *new)
    job = await finished(client, first.job_id)
    assert len(job["result"]["entries"]) == 30
    await publish(client, old[-1])
    assert (await rpc(client, "jobs.get", {"id": first.job_id}))["updated_at"] == job["updated_at"]
