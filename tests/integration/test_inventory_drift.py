"""Drift on a real bus with a real agent: a revoked certificate put back into its store is found
by a store inventory, raised once, removed again when the policy says so, and the certificate's
history tells it all; stores and agents not approved are refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.agent.app import build as build_agent
from services.agent.settings import AgentSettings
from services.gateway.app import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.inventory.app import build as build_inventory
from services.inventory.settings import InventorySettings
from shared import pki, subjects
from shared.clock import utcnow
from shared.events import CertRevoked, UserOnboarded
from shared.pki import RevocationReason
from tests.inventory_kit import BusReader, TestCA, eventually, publish, stand_in_issuer

pytestmark = pytest.mark.integration

MACHINE = "hana-pc"
POLICY = """
rules:
  - name: every-user
    match: {}
    provision:
      - template: user-client
drift:
  auto_fix: %s
"""


async def rpc(nc: Any, op: str, payload: dict[str, Any]) -> Any:
    reply = await nc.request(subjects.rpc("inventory", op), json.dumps(payload).encode(), timeout=5)
    data = json.loads(reply.data)
    assert data["ok"], data
    return data["result"]


async def finished(nc: Any, job_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        job = await rpc(nc, "jobs.get", {"id": job_id})
        return job if job["status"] != "sent" else None

    job = await eventually(done)
    assert job, f"job {job_id} did not finish"
    return job


class World:
    """Inventory with a policy, one agent, a stand-in issuer; a user onboarded onto the
    agent's machine, whose certificate is then revoked and removed."""

    def __init__(self, url: str, nc: Any, tmp_path: Path, auto_fix: bool) -> None:
        self.nc, self.reader, self.ca = nc, BusReader(nc), TestCA()
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY % ("true" if auto_fix else "false"))
        self.inventory = build_inventory(InventorySettings(
            nats_url=url, policy_file=policy,
            inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}"))  # fmt: skip
        self.agent = build_agent(AgentSettings(nats_url=url, machine=MACHINE,
                                               root=tmp_path / MACHINE))  # fmt: skip
        self.store = tmp_path / MACHINE / "certs" / "user-client"

    async def __aenter__(self) -> World:
        await self.inventory.app.start()
        await self.agent.app.start()
        self.issuer = asyncio.create_task(stand_in_issuer(self.nc, self.ca, "drift-issuer"))
        return self

    async def __aexit__(self, *_: object) -> None:
        self.issuer.cancel()
        await self.agent.app.stop()
        await self.inventory.app.stop()

    async def revoked_and_removed(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Hana's certificate, installed, revoked and removed; the files it had."""
        await publish(self.nc, UserOnboarded(user="hana", email="hana@example.com",
                                             devices=[MACHINE]))  # fmt: skip
        (installed,) = await self.reader.take(subjects.CERT_INSTALLED, 1)
        files = {p.name: p.read_bytes() for p in self.store.iterdir()}
        assert len(files) == 3
        cert = await rpc(self.nc, "certs.get", {"id": installed["cert_id"]})
        await publish(self.nc, CertRevoked(
            cert_id=cert["id"], serial=cert["serial"], issuer_ca=self.ca.name, owner="hana",
            reason=RevocationReason.KEY_COMPROMISE, comment="laptop stolen",
            revoked_at=utcnow()))  # fmt: skip
        (removed,) = await self.reader.take(subjects.CERT_REMOVED, 1)
        assert removed["found"] is True and not any(self.store.iterdir())
        return cert, files

    def put_back(self, files: dict[str, bytes]) -> None:
        """Somebody restores the files from a backup."""
        for name, data in files.items():
            (self.store / name).write_bytes(data)

    async def inventory_of_the_store(self) -> dict[str, Any]:
        (store,) = (await rpc(self.nc, "stores.list", {"machine": MACHINE}))["items"]
        job = await rpc(self.nc, "stores.inventory", {"id": store["id"]})
        return await finished(self.nc, job["job_id"])

    async def drift(self) -> list[dict[str, Any]]:
        return (await rpc(self.nc, "drift.list", {"machine": MACHINE}))["items"]


async def test_a_revoked_certificate_put_back_is_removed_again_and_its_history_tells_it(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    async with World(nats_url, nats_client, tmp_path, auto_fix=True) as world:
        cert, files = await world.revoked_and_removed()
        world.put_back(files)

        report = await world.inventory_of_the_store()
        assert [e["serial"] for e in report["result"]["entries"]] == [cert["serial"]]
        (detected,) = await world.reader.take(subjects.CERT_DRIFT_DETECTED, 1)
        assert (detected["kind"], detected["cert_id"], detected["fixed"]) == (
            "unexpected", cert["id"], True)  # fmt: skip
        assert detected["reason"] == "revoked (keyCompromise)" and detected["job_id"]

        (removed,) = await world.reader.take(subjects.CERT_REMOVED, 1)
        assert removed["job_id"] == detected["job_id"] and removed["found"] is True
        assert not any(world.store.iterdir())
        fix = await finished(world.nc, detected["job_id"])
        assert (fix["kind"], fix["status"], fix["cert_id"]) == ("remove", "completed", cert["id"])

        async def closed() -> dict[str, Any] | None:
            (d,) = await world.drift()
            return d if not d["open"] else None

        record = await eventually(closed)
        assert record, await world.drift()
        assert (record["fixed"], record["job_id"], record["last_seen"]) == (
            True, detected["job_id"], None)  # fmt: skip

        history = (await rpc(world.nc, "certs.history", {"id": cert["id"]}))["items"]
        assert [h["subject"] for h in history] == [
            "cert.issued", "cert.installed", "cert.revoked", "cert.removed",
            "cert.installed", "cert.drift.detected", "cert.removed",
        ]  # fmt: skip
        found_again, drift_entry, fixed = history[4:]
        assert found_again["details"]["seen_by"] == "inventory"
        assert found_again["details"]["job_id"] == report["job_id"]
        assert drift_entry["event_id"] == detected["event_id"]
        assert drift_entry["details"]["fix_job_id"] == detected["job_id"]
        assert fixed["details"]["found"] is True
        locations = (await rpc(world.nc, "certs.locations", {"id": cert["id"]}))["items"]
        assert [loc["active"] for loc in locations] == [False]


async def test_without_auto_fix_the_drift_is_recorded_once_and_the_certificate_stays(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    async with World(nats_url, nats_client, tmp_path, auto_fix=False) as world:
        cert, files = await world.revoked_and_removed()
        world.put_back(files)

        await world.inventory_of_the_store()
        (detected,) = await world.reader.take(subjects.CERT_DRIFT_DETECTED, 1)
        assert (detected["kind"], detected["fixed"], detected["job_id"]) == (
            "unexpected", False, None)  # fmt: skip
        (record,) = await world.drift()
        assert (record["cert_id"], record["fixed"], record["job_id"], record["open"]) == (
            cert["id"], False, None, True)  # fmt: skip
        first_seen = record["last_seen"]
        assert first_seen

        # Inventoried again while it is still there: the same drift, not raised again.
        await world.inventory_of_the_store()
        assert await world.reader.none_more(subjects.CERT_DRIFT_DETECTED, wait=1.5) == []
        assert await world.reader.none_more(subjects.CERT_REMOVED, wait=0.5) == []
        (record,) = await world.drift()
        assert record["id"] == detected["event_id"] and record["last_seen"] > first_seen
        removals = await rpc(world.nc, "jobs.list", {"machine": MACHINE, "kind": "remove"})
        assert removals["total"] == 1  # the revocation's
        assert sorted(p.name for p in world.store.iterdir()) == sorted(files)
        history = (await rpc(world.nc, "certs.history", {"id": cert["id"]}))["items"]
        assert [h["subject"] for h in history].count("cert.drift.detected") == 1


# Approval: stores found by discovery, and agents inventory has not heard from.

DEVICE = "web-07"


@pytest.fixture
async def api(nats_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    inventory = build_inventory(InventorySettings(
        nats_url=nats_url,
        inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}"))  # fmt: skip
    await inventory.app.start()
    gateway = build_gateway(GatewaySettings(nats_url=nats_url, rpc_timeout=5.0))
    async with gateway.router.lifespan_context(gateway):
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client
    await inventory.app.stop()


async def test_a_discovered_store_is_neither_inventoried_nor_enrolled_into_until_approved(
    api: httpx.AsyncClient, nats_url: str, tmp_path: Path
) -> None:
    unknown = await api.post(f"/v1/agents/{DEVICE}/approve")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert "auto_approve" in unknown.json()["error"]["message"]
    assert (await api.get("/v1/agents")).json()["items"] == []  # nothing was made up

    root = tmp_path / DEVICE
    (root / "etc" / "ssl").mkdir(parents=True)
    ca = TestCA("legacy")
    (root / "etc" / "ssl" / "legacy.crt").write_text(pki.pem(ca.certificate))
    agent = build_agent(AgentSettings(nats_url=nats_url, machine=DEVICE, root=root,
                                      heartbeat_seconds=0.2))  # fmt: skip
    await agent.app.start()
    try:

        async def registered() -> list[dict[str, Any]]:
            return (await api.get("/v1/agents", params={"status": "pending"})).json()["items"]

        assert await eventually(registered)
        assert (await api.post(f"/v1/agents/{DEVICE}/approve")).json()["status"] == "approved"
        discovery = await api.post(f"/v1/agents/{DEVICE}/discover", json={"paths": ["etc"]})
        job = discovery.json()

        async def discovered() -> list[dict[str, Any]]:
            got = (await api.get(f"/v1/jobs/{job['job_id']}")).json()
            if got["status"] == "sent":
                return []
            return (await api.get("/v1/stores", params={"status": "discovered"})).json()["items"]

        (found,) = await eventually(discovered)
        for path, body in ((f"/v1/stores/{found['id']}/inventory", None),
                           (f"/v1/stores/{found['id']}/enroll",
                            {"template": "tls-server", "subject": "CN=web-07"})):  # fmt: skip
            refused = await api.post(path, json=body)
            assert refused.status_code == 409, (path, refused.text)
            error = refused.json()["error"]
            assert error["code"] == "store_not_approved" and "discovered" in error["message"]
        assert (await api.get("/v1/jobs", params={"machine": DEVICE})).json()["total"] == 1

        assert (await api.post(f"/v1/stores/{found['id']}/approve")).json()["status"] == "approved"
        sent = await api.post(f"/v1/stores/{found['id']}/inventory")
        assert sent.status_code == 202, sent.text
        enrolled = await api.post(
            f"/v1/stores/{found['id']}/enroll",
            json={"template": "tls-server", "subject": "CN=web-07"},
        )
        assert enrolled.status_code == 202, enrolled.text
    finally:
        await agent.app.stop()
