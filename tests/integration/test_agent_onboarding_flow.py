"""Onboarding and offboarding through inventory and a real agent, with a stand-in issuer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from services.agent.app import build as build_agent
from services.agent.settings import AgentSettings
from services.inventory.app import build as build_inventory
from services.inventory.settings import InventorySettings
from shared import subjects
from shared.clock import utcnow
from shared.events import CertRevoked, UserOffboarded, UserOnboarded
from shared.pki import RevocationReason
from tests.inventory_kit import (
    BusReader,
    TestCA,
    cert_and_key_match,
    eventually,
    publish,
    stand_in_issuer,
)

pytestmark = pytest.mark.integration


async def test_a_new_hire_gets_a_certificate_on_the_laptop_and_loses_it_when_leaving(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    reader, ca = BusReader(nats_client), TestCA()
    inventory = build_inventory(
        InventorySettings(
            nats_url=nats_url, inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}"
        )
    )
    laptop = build_agent(
        AgentSettings(nats_url=nats_url, machine="erin-laptop", root=tmp_path / "erin-laptop")
    )
    await inventory.app.start()
    await laptop.app.start()
    issuer = asyncio.create_task(stand_in_issuer(nats_client, ca))
    store = tmp_path / "erin-laptop" / "certs" / "user-client"
    try:
        await publish(
            nats_client,
            UserOnboarded(user="erin", email="erin@example.com", devices=["erin-laptop"]),
        )
        (installed,) = await reader.take(subjects.CERT_INSTALLED, 1)
        assert cert_and_key_match(store / "user-client-erin.crt", store / "user-client-erin.key")

        async def located() -> dict[str, Any] | None:
            reply = await nats_client.request(
                subjects.rpc("inventory", "certs.get"),
                json.dumps({"id": installed["cert_id"]}).encode(),
            )
            cert = json.loads(reply.data)["result"]
            return cert if cert["locations"] else None

        cert = await eventually(located)
        assert cert["owner"] == "erin" and cert["subject"] == "CN=erin"
        assert cert["locations"][0]["machine"] == "erin-laptop"

        await publish(nats_client, UserOffboarded(user="erin"))
        await publish(
            nats_client,
            CertRevoked(
                cert_id=cert["id"],
                serial=cert["serial"],
                issuer_ca=ca.name,
                owner="erin",
                reason=RevocationReason.CESSATION_OF_OPERATION,
                comment="erin left",
                revoked_at=utcnow(),
            ),
        )
        (done,) = await reader.take(subjects.USER_OFFBOARDING_COMPLETED, 1)
        assert (done["found"], done["revoked"], done["removed"]) == (1, 1, 1)
        assert not (store / "user-client-erin.crt").exists()
        assert not (store / "user-client-erin.key").exists()
    finally:
        issuer.cancel()
        await laptop.app.stop()
        await inventory.app.stop()


async def test_a_certificate_deleted_from_its_store_is_re_enrolled_when_inventory_finds_it_missing(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    reader, ca = BusReader(nats_client), TestCA()
    inventory = build_inventory(
        InventorySettings(
            nats_url=nats_url, inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}"
        )
    )
    pc = build_agent(AgentSettings(nats_url=nats_url, machine="finn-pc", root=tmp_path / "pc"))
    await inventory.app.start()
    await pc.app.start()
    issuer = asyncio.create_task(stand_in_issuer(nats_client, ca))
    store = tmp_path / "pc" / "certs" / "user-client"
    try:
        await publish(nats_client, UserOnboarded(user="finn", devices=["finn-pc"]))
        (first,) = await reader.take(subjects.CERT_INSTALLED, 1)
        await eventually(lambda: _located(nats_client, first["cert_id"]))
        for f in store.iterdir():
            f.unlink()

        stores = await _rpc(nats_client, "stores.list", {"machine": "finn-pc"})
        (pem,) = stores["items"]
        await _rpc(nats_client, "stores.inventory", {"id": pem["id"]})
        (drift,) = await reader.take(subjects.CERT_DRIFT_DETECTED, 1)
        assert (drift["kind"], drift["cert_id"], drift["fixed"]) == (
            "missing",
            first["cert_id"],
            True,
        )

        (second,) = await reader.take(subjects.CERT_INSTALLED, 1)
        assert second["cert_id"] != first["cert_id"]
        assert cert_and_key_match(store / "user-client-finn.crt", store / "user-client-finn.key")
        (retired,) = await reader.take(subjects.CERT_REVOCATION_REQUESTED, 1)
        assert retired["cert_ids"] == [first["cert_id"]]
        history = await _rpc(nats_client, "certs.history", {"id": first["cert_id"]})
        assert [h["subject"] for h in history["items"]][:2] == ["cert.issued", "cert.installed"]
    finally:
        issuer.cancel()
        await pc.app.stop()
        await inventory.app.stop()


NAMED_FILES_POLICY = """
rules:
  - name: web-servers
    match: {}
    provision:
      - template: tls-server
        subject: "CN={device}"
        store_path: "etc/nginx/tls"
        alias: "{device}"
        cert_file: "{alias}.pem"
        key_file: "{alias}-key.pem"
        chain_file: "chain.pem"
drift:
  auto_fix: true
"""


async def test_the_policy_names_the_pem_files_and_the_agent_keeps_them_under_those_names(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    reader, ca = BusReader(nats_client), TestCA()
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(NAMED_FILES_POLICY)
    inventory = build_inventory(
        InventorySettings(
            nats_url=nats_url, policy_file=policy_file,
            inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}",
        )
    )  # fmt: skip
    web = build_agent(AgentSettings(nats_url=nats_url, machine="web-01", root=tmp_path / "web"))
    await inventory.app.start()
    await web.app.start()
    issuer = asyncio.create_task(stand_in_issuer(nats_client, ca))
    store = tmp_path / "web" / "etc" / "nginx" / "tls"
    try:
        await publish(nats_client, UserOnboarded(user="gil", devices=["web-01"]))
        (installed,) = await reader.take(subjects.CERT_INSTALLED, 1)
        assert sorted(p.name for p in store.iterdir()) == [
            "chain.pem", "web-01-key.pem", "web-01.pem"]  # fmt: skip
        assert cert_and_key_match(store / "web-01.pem", store / "web-01-key.pem")
        assert installed["target"]["cert_file"] == "web-01.pem"
        cert = await eventually(lambda: _located(nats_client, installed["cert_id"]))
        assert cert

        # An inventory of the directory finds the certificate under its names: no drift.
        (pem,) = (await _rpc(nats_client, "stores.list", {"machine": "web-01"}))["items"]
        job = await _rpc(nats_client, "stores.inventory", {"id": pem["id"]})
        report = await eventually(lambda: _finished(nats_client, job["job_id"]))
        assert [e["alias"] for e in report["result"]["entries"]] == ["web-01"]
        assert await reader.none_more(subjects.CERT_DRIFT_DETECTED, wait=1.5) == []

        # A revocation removes the files, though the remove job names only the alias.
        got = await _rpc(nats_client, "certs.get", {"id": installed["cert_id"]})
        await publish(
            nats_client,
            CertRevoked(
                cert_id=got["id"], serial=got["serial"], issuer_ca=ca.name, owner="gil",
                reason=RevocationReason.KEY_COMPROMISE, comment="test", revoked_at=utcnow(),
            ),
        )  # fmt: skip
        (removed,) = await reader.take(subjects.CERT_REMOVED, 1)
        assert removed["found"] is True
        assert await eventually(lambda: _gone(store))
    finally:
        issuer.cancel()
        await web.app.stop()
        await inventory.app.stop()


async def _finished(nc: Any, job_id: str) -> dict[str, Any] | None:
    job = await _rpc(nc, "jobs.get", {"id": job_id})
    return job if job["status"] == "completed" else None


async def _gone(store: Path) -> bool:
    return not await asyncio.to_thread(lambda: any(store.iterdir()))


async def _rpc(nc: Any, op: str, payload: dict[str, Any]) -> Any:
    reply = await nc.request(subjects.rpc("inventory", op), json.dumps(payload).encode(), timeout=5)
    data = json.loads(reply.data)
    assert data["ok"], data
    return data["result"]


async def _located(nc: Any, cert_id: str) -> bool:
    return bool((await _rpc(nc, "certs.get", {"id": cert_id}))["locations"])
