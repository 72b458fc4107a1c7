"""Failures an agent meets, on a real nats-server: a job that cannot succeed is answered and
shows as failed in inventory's jobs; one that may succeed later is delivered again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.agent import keys
from services.agent.app import build as build_agent
from services.agent.settings import AgentSettings
from services.inventory.app import build as build_inventory
from services.inventory.settings import InventorySettings
from shared import subjects
from shared.events import AgentJob, CertRequested, JobKind, StoreTarget, derived_id
from tests.inventory_kit import BusReader, TestCA, eventually, publish

pytestmark = pytest.mark.integration

MACHINE = "web-02"
TARGET = StoreTarget(machine=MACHINE, store_path="certs/web", alias="web")
NOT_A_CERTIFICATE = "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"


async def test_an_add_job_with_a_certificate_that_does_not_parse_ends_failed_in_the_jobs_api(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    inventory = build_inventory(
        InventorySettings(
            nats_url=nats_url, inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}"
        )
    )
    web = build_agent(AgentSettings(nats_url=nats_url, machine=MACHINE, root=tmp_path / "web"))
    csr = keys.build_csr(ec.generate_private_key(ec.SECP256R1()), "CN=web-02", [])
    csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    issued = TestCA().issue(
        CertRequested(
            request_id="bad-pem-1", template="tls-server", csr_pem=csr_pem,
            owner="ops", device=MACHINE, target=TARGET,
        )
    )  # fmt: skip
    broken = issued.model_copy(update={"certificate_pem": NOT_A_CERTIFICATE})
    job_id = derived_id("job", issued.cert_id, "add")
    await inventory.app.start()
    await web.app.start()
    try:
        await publish(nats_client, broken)

        async def answered() -> dict[str, Any] | None:
            job = await _job(nats_client, job_id)
            return job if job and job["status"] != "sent" else None

        job = await eventually(answered, within=20)
    finally:
        await web.app.stop()
        await inventory.app.stop()
    assert job is not None, "the add job is still 'sent': the agent never answered it"
    assert (job["status"], job["error_code"]) == ("failed", "invalid_certificate")
    assert job["error"].startswith("certificate_pem is not a certificate")


async def test_a_job_the_issuer_is_away_for_is_delivered_again_not_answered(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    reader = BusReader(nats_client)
    kiosk = build_agent(
        AgentSettings(nats_url=nats_url, machine="kiosk-9", root=tmp_path / "kiosk", max_deliver=2)
    )
    job = AgentJob(
        job_id="server-key-while-issuer-away", machine="kiosk-9", kind=JobKind.REENROLL,
        target=StoreTarget(machine="kiosk-9", store_path="certs/kiosk", alias="kiosk"),
        request_id="away-1", template="machine-client", subject_dn="CN=kiosk-9",
        payload={"key_generation": "server"},
    )  # fmt: skip
    await kiosk.app.start()
    try:
        await publish(nats_client, job)
        (parked,) = await reader.take(subjects.dead_letter(subjects.agent_jobs("kiosk-9")), 1)
        failed = await reader.none_more(subjects.AGENT_JOB_FAILED, wait=1.0)
    finally:
        await kiosk.app.stop()
    assert parked["job_id"] == job.job_id
    assert [f for f in failed if f["job_id"] == job.job_id] == []


async def _job(nc: Any, job_id: str) -> dict[str, Any] | None:
    reply = await nc.request(
        subjects.rpc("inventory", "jobs.get"), json.dumps({"id": job_id}).encode(), timeout=5
    )
    return json.loads(reply.data).get("result")
