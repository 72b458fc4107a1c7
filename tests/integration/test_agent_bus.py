"""The agent in-process against a real nats-server: durable jobs, CSRs, installs, removals."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from services.agent import keys
from services.agent.app import build
from services.agent.settings import AgentSettings
from shared import pki, subjects
from shared.events import AgentJob, JobKind, StoreTarget, derived_id
from shared.runtime import ServiceRuntime
from tests.inventory_kit import BusReader, TestCA, cert_and_key_match, eventually, publish

pytestmark = pytest.mark.integration

MACHINE = "web-01.example.com"
TARGET = StoreTarget(machine=MACHINE, store_path="certs/web", alias="web")


def agent(nats_url: str, root: Path) -> ServiceRuntime:
    return build(
        AgentSettings(nats_url=nats_url, machine=MACHINE, root=root, heartbeat_seconds=0.2)
    )


def reenroll(request_id: str) -> AgentJob:
    return AgentJob(
        job_id=derived_id("job", request_id, "reenroll"), machine=MACHINE, kind=JobKind.REENROLL,
        target=TARGET, request_id=request_id, template="server", subject_dn="CN=web-01",
        sans=["dns:web-01.example.com"], owner="ops",
    )  # fmt: skip


def add(cert: x509.Certificate, ca: TestCA, request_id: str) -> AgentJob:
    return AgentJob(
        job_id=f"add-{request_id}", machine=MACHINE, kind=JobKind.ADD, target=TARGET,
        request_id=request_id, cert_id=f"cert-{request_id}",
        serial=pki.render_serial(cert.serial_number), certificate_pem=pki.pem(cert),
        chain_pem=[pki.pem(ca.certificate)],
    )  # fmt: skip


async def test_a_reenroll_job_publishes_a_csr_for_the_key_kept_on_the_machine(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    reader, rt = BusReader(nats_client), agent(nats_url, tmp_path)
    await rt.app.start()
    try:
        job = reenroll("r-1")
        await publish(nats_client, job)
        (requested,) = await reader.take(subjects.CERT_REQUESTED, 1)
        (done,) = await reader.take(subjects.AGENT_JOB_COMPLETED, 1)
        beats = await reader.take(subjects.AGENT_HEARTBEAT, 1)
    finally:
        await rt.app.stop()
    key_file = tmp_path / ".certbus" / "pending" / "r-1.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    csr = x509.load_pem_x509_csr(requested["csr_pem"].encode())
    assert csr.is_signature_valid
    assert keys.public_der(csr) == keys.public_der(keys.load(key_file))
    assert requested["event_id"] == derived_id(job.job_id, subjects.CERT_REQUESTED)
    assert requested["correlation_id"] == job.correlation_id
    assert (requested["device"], requested["job_id"]) == (MACHINE, job.job_id)
    assert done["job_id"] == job.job_id and done["kind"] == "reenroll"
    assert beats[0]["machine"] == MACHINE


async def test_jobs_sent_while_the_agent_is_stopped_run_when_it_starts(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    reader, ca = BusReader(nats_client), TestCA()
    first = agent(nats_url, tmp_path)
    await first.app.start()
    await publish(nats_client, reenroll("r-2"))
    (requested,) = await reader.take(subjects.CERT_REQUESTED, 1)
    await first.app.stop()

    cert = ca.sign(x509.load_pem_x509_csr(requested["csr_pem"].encode()))
    await publish(nats_client, add(cert, ca, "r-2"))
    store = tmp_path / "certs" / "web"
    assert not (store / "web.crt").exists()

    second = agent(nats_url, tmp_path)
    await second.app.start()
    try:
        (installed,) = await reader.take(subjects.CERT_INSTALLED, 1)
        assert cert_and_key_match(store / "web.crt", store / "web.key")
        assert stat.S_IMODE((store / "web.key").stat().st_mode) == 0o600
        assert installed["serial"] == pki.render_serial(cert.serial_number)
        assert installed["target"]["alias"] == "web"

        removal = add(cert, ca, "r-2").model_copy(
            update={"job_id": "rm-r-2", "kind": JobKind.REMOVE}
        )
        await publish(nats_client, removal)
        (removed,) = await reader.take(subjects.CERT_REMOVED, 1)
        assert removed["found"] is True
        assert await eventually(lambda: _empty(store))
    finally:
        await second.app.stop()


async def test_a_redelivered_job_publishes_nothing_new(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    reader, rt = BusReader(nats_client), agent(nats_url, tmp_path)
    await rt.app.start()
    try:
        job = reenroll("r-3")
        await publish(nats_client, job)
        await publish(nats_client, job.model_copy(update={"event_id": "the-same-job-again"}))
        results = await reader.take(subjects.AGENT_JOB_COMPLETED, 2, within=4)
    finally:
        await rt.app.stop()
    assert len(results) == 1
    stream = await reader.js.stream_info("CERT")
    assert stream.state.messages == 1


async def _empty(path: Path) -> bool:
    return not await asyncio.to_thread(lambda: any(path.iterdir()))
