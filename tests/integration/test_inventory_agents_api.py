"""Agents, stores, jobs and drift through the Web API, with a real agent on a real bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.agent.app import build as build_agent
from services.agent.settings import AgentSettings
from services.gateway.app import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.inventory.app import build as build_inventory
from services.inventory.settings import InventorySettings
from shared import pki
from shared.clock import utcnow
from tests.inventory_kit import eventually

pytestmark = pytest.mark.integration

MACHINE = "web-01"


@pytest.fixture
async def api(nats_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    inventory = build_inventory(InventorySettings(
        nats_url=nats_url, agent_offline_after_seconds=2.0,
        inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}"))  # fmt: skip
    await inventory.app.start()
    gateway = build_gateway(GatewaySettings(nats_url=nats_url, rpc_timeout=5.0))
    async with gateway.router.lifespan_context(gateway):
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client
    await inventory.app.stop()


@pytest.fixture
async def agent(nats_url: str, tmp_path: Path) -> AsyncIterator[Path]:
    root = tmp_path / MACHINE
    rt = build_agent(
        AgentSettings(nats_url=nats_url, machine=MACHINE, root=root, heartbeat_seconds=0.2)
    )
    await rt.app.start()
    yield root
    await rt.app.stop()


def foreign_certificate() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legacy.example.com")])
    now = utcnow()
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=9))
            .sign(key, hashes.SHA256()))  # fmt: skip


async def done(api: httpx.AsyncClient, job: dict[str, Any]) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        got = (await api.get(f"/v1/jobs/{job['job_id']}")).json()
        return got if got["status"] != "sent" else None

    result = await eventually(finished)
    assert result, f"job {job['job_id']} did not finish"
    return result


async def test_an_unknown_agent_waits_for_approval_then_manages_its_stores(
    api: httpx.AsyncClient, agent: Path
) -> None:
    async def registered() -> list[dict[str, Any]]:
        return (await api.get("/v1/agents", params={"status": "pending"})).json()["items"]

    (pending,) = await eventually(registered)
    assert pending["machine"] == MACHINE and pending["decided_by"] is None
    refused = await api.post(
        "/v1/stores",
        json={"machine": MACHINE, "store_type": "jks", "store_path": "app/keystore.jks"},
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "agent_not_approved"

    approved = await api.post(f"/v1/agents/{MACHINE}/approve")
    assert approved.json()["status"] == "approved"
    added = await api.post(
        "/v1/stores",
        json={"machine": MACHINE, "store_type": "jks", "store_path": "app/keystore.jks"},
    )
    assert added.status_code == 202
    created = await done(api, added.json()["job"])
    assert created["status"] == "completed" and created["result"]["created"] is True
    assert (agent / "app" / "keystore.jks").is_file()
    listed = (await api.get("/v1/jobs", params={"machine": MACHINE, "kind": "create"})).json()
    assert [j["job_id"] for j in listed["items"]] == [created["job_id"]]


async def test_discovery_and_inventory_find_a_foreign_certificate_and_report_drift(
    api: httpx.AsyncClient, agent: Path
) -> None:
    async def registered() -> list[dict[str, Any]]:
        return (await api.get("/v1/agents")).json()["items"]

    assert await eventually(registered)  # only an agent that has reported can be approved
    assert (await api.post(f"/v1/agents/{MACHINE}/approve")).status_code == 200
    legacy = foreign_certificate()
    (agent / "etc" / "ssl").mkdir(parents=True)
    (agent / "etc" / "ssl" / "legacy.crt").write_text(pki.pem(legacy))

    discovery = (await api.post(f"/v1/agents/{MACHINE}/discover", json={"paths": ["etc"]})).json()
    assert (await done(api, discovery))["status"] == "completed"
    (found,) = (await api.get("/v1/stores", params={"status": "discovered"})).json()["items"]
    assert (found["store_type"], found["store_path"], found["entries"]) == ("pem", "etc/ssl", 1)
    assert (await api.post(f"/v1/stores/{found['id']}/approve")).json()["status"] == "approved"

    report = await done(api, (await api.post(f"/v1/stores/{found['id']}/inventory")).json())
    assert [e["serial"] for e in report["result"]["entries"]] == [
        pki.render_serial(legacy.serial_number)
    ]

    (drift,) = (await api.get("/v1/drift", params={"machine": MACHINE})).json()["items"]
    assert drift["kind"] == "unexpected" and drift["reason"] == "not issued by certbus"
    page = (
        await api.get(
            "/v1/certificates",
            params={"query": 'Source -eq discovered AND CN -eq "legacy.example.com"'},
        )
    ).json()
    assert page["total"] == 1
    cert = page["items"][0]
    assert cert["serial"] == pki.render_serial(legacy.serial_number)
    assert cert["issuer"] == "CN=legacy.example.com"
    locations = (await api.get(f"/v1/certificates/{cert['id']}/locations")).json()["items"]
    assert [(loc["machine"], loc["store_path"], loc["alias"]) for loc in locations] == [
        (MACHINE, "etc/ssl", "legacy")
    ]


async def test_an_agent_that_goes_silent_is_shown_offline(
    api: httpx.AsyncClient, nats_url: str, tmp_path: Path
) -> None:
    rt = build_agent(
        AgentSettings(
            nats_url=nats_url, machine="quiet-01", root=tmp_path / "q", heartbeat_seconds=0.2
        )
    )
    await rt.app.start()

    async def state() -> str | None:
        items = (await api.get("/v1/agents")).json()["items"]
        return next((a["state"] for a in items if a["machine"] == "quiet-01"), None)

    assert await eventually(state) == "online"
    await rt.app.stop()

    async def offline() -> bool:
        return await state() == "offline"

    assert await eventually(offline)


async def test_unknown_things_are_404_with_a_code(api: httpx.AsyncClient) -> None:
    for path in (
        "/v1/jobs/nope",
        "/v1/certificates/nope/history",
        "/v1/hr/offboardings/nobody",
        "/v1/users/nobody",
        "/v1/devices/nothing",
    ):
        response = await api.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    bad = await api.get("/v1/certificates", params={"query": "CN -eq"})
    assert bad.status_code == 422 and "at position 7" in bad.json()["error"]["message"]
