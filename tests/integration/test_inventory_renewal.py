"""Renewal of installed certificates: a new key made where each certificate lives, the new
certificate installed in its place, the old one revoked as superseded — by request (a query,
with a dry run) and by the lifecycle policy for certificates near the end of their life."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from services.agent.app import build as build_agent
from services.agent.settings import AgentSettings
from services.inventory.app import build as build_inventory
from services.inventory.settings import InventorySettings
from services.issuer.app import build as build_issuer
from services.issuer.testing import issuer_settings
from shared import subjects
from shared.events import CertRequested, UserOnboarded
from shared.pki import RevocationReason
from tests.inventory_kit import BusReader, TestCA, cert_and_key_match, eventually, publish

pytestmark = pytest.mark.integration


async def rpc(nc: Any, op: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await nc.request(subjects.rpc("inventory", op), json.dumps(body).encode(), timeout=10)
    answer = json.loads(reply.data)
    assert "result" in answer, answer
    return answer["result"]


async def installed_at(nc: Any, cert_id: str) -> dict[str, Any] | None:
    cert = await rpc(nc, "certs.get", {"id": cert_id})
    return cert if cert["locations"] else None


async def test_a_renewal_makes_a_new_key_on_the_machine_replaces_the_certificate_and_retires_it(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    issuer = build_issuer(issuer_settings(tmp_path / "issuer", nats_url))
    inventory = build_inventory(
        InventorySettings(
            nats_url=nats_url, inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}"
        )
    )
    laptop = build_agent(AgentSettings(nats_url=nats_url, machine="gina-laptop",
                                       root=tmp_path / "gina-laptop"))  # fmt: skip
    reader = BusReader(nats_client)
    for rt in (issuer, inventory, laptop):
        await rt.app.start()
    store = tmp_path / "gina-laptop" / "certs" / "user-client"
    cert_file, key_file = store / "user-client-gina.crt", store / "user-client-gina.key"
    try:
        await publish(nats_client, UserOnboarded(user="gina", devices=["gina-laptop"]))
        (first,) = await reader.take(subjects.CERT_INSTALLED, 1, within=30)
        await eventually(lambda: installed_at(nats_client, first["cert_id"]), within=20)
        old_cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        old_key = key_file.read_bytes()

        plan = await rpc(
            nats_client, "renewals.start", {"query": "Owner -eq gina", "dry_run": True}
        )
        assert (plan["certificates"], plan["jobs_sent"], plan["skipped"]) == (1, 0, [])
        (step,) = plan["planned"]
        assert (step["cert_id"], step["machine"], step["alias"]) == (
            first["cert_id"],
            "gina-laptop",
            "user-client-gina",
        )
        assert (await rpc(nats_client, "renewals.list", {}))["items"] == []

        started = await rpc(nats_client, "renewals.start", {"query": "Owner -eq gina"})
        assert started["jobs_sent"] == 1
        again = await rpc(nats_client, "renewals.start", {"cert_ids": [first["cert_id"]]})
        assert again["jobs_sent"] == 0  # asked twice: renewed once

        (second,) = await reader.take(subjects.CERT_INSTALLED, 1, within=30)
        assert second["cert_id"] != first["cert_id"]
        (renewed,) = await reader.take(subjects.CERT_RENEWED, 1)
        assert (renewed["old_cert_id"], renewed["new_cert_id"]) == (
            first["cert_id"],
            second["cert_id"],
        )
        new_cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        assert new_cert.serial_number != old_cert.serial_number
        assert new_cert.subject == old_cert.subject
        assert key_file.read_bytes() != old_key  # a new key, made on the machine
        assert cert_and_key_match(cert_file, key_file)

        (retire,) = await reader.take(subjects.CERT_REVOCATION_REQUESTED, 1)
        assert retire["cert_ids"] == [first["cert_id"]]
        assert RevocationReason(retire["reason"]) == RevocationReason.SUPERSEDED
        assert second["cert_id"] in retire["comment"]

        progress = await rpc(nats_client, "renewals.list", {"cert_id": first["cert_id"]})
        assert progress["progress"] == {"installed": 1}
        assert progress["items"][0]["new_cert_id"] == second["cert_id"]
        assert (await rpc(nats_client, "certs.get", {"id": first["cert_id"]}))["locations"] == []
        await eventually(lambda: installed_at(nats_client, second["cert_id"]))
        later = await rpc(nats_client, "renewals.start", {"cert_ids": [first["cert_id"]]})
        assert later["jobs_sent"] == 0
        assert "already renewed" in later["skipped"][0]["reason"]
        # A CSR went out (the key was made on the machine), and no key travelled.
        requests = await reader.take(subjects.CERT_REQUESTED, 2)
        assert [r.get("renewal_of") for r in requests] == [None, first["cert_id"]]
        assert all("PRIVATE KEY" not in json.dumps(r) for r in requests)
    finally:
        for rt in (laptop, inventory, issuer):
            await rt.app.stop()


async def test_what_cannot_be_renewed_is_said_and_a_bad_query_is_refused(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    inventory = build_inventory(
        InventorySettings(
            nats_url=nats_url, inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}"
        )
    )
    await inventory.app.start()
    try:
        reply = await nats_client.request(
            subjects.rpc("inventory", "renewals.start"), json.dumps({"query": "CN -xx a"}).encode()
        )
        error = json.loads(reply.data)["error"]
        assert error["code"] == "invalid_query" and "position" in error["message"]
        reply = await nats_client.request(
            subjects.rpc("inventory", "renewals.start"), json.dumps({}).encode()
        )
        assert json.loads(reply.data)["error"]["code"] == "invalid_request"
        answer = await rpc(nats_client, "renewals.start", {"cert_ids": ["nope"]})
        assert answer["skipped"] == [{"cert_id": "nope", "reason": "no such certificate"}]
    finally:
        await inventory.app.stop()


async def aging_issuer(nc: Any, ca: TestCA) -> None:
    """Signs first enrollments as 30-day certificates already 26 days old; renewals fresh."""
    sub = await nc.jetstream().pull_subscribe(subjects.CERT_REQUESTED, durable="aging-issuer")
    while True:
        try:
            msgs = await sub.fetch(10, timeout=0.5)
        except TimeoutError:
            continue
        for m in msgs:
            request = CertRequested.model_validate_json(m.data)
            await publish(nc, ca.issue(request, aged_days=0 if request.renewal_of else 26))
            await m.ack()


async def test_the_lifecycle_policy_renews_a_certificate_near_its_end_once(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    inventory = build_inventory(InventorySettings(
        nats_url=nats_url, inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}",
        renew_before_days=30, renewal_check_seconds=0.3))  # fmt: skip
    pc = build_agent(AgentSettings(nats_url=nats_url, machine="hank-pc", root=tmp_path / "pc"))
    reader, ca = BusReader(nats_client), TestCA()
    await inventory.app.start()
    await pc.app.start()
    issuer = asyncio.create_task(aging_issuer(nats_client, ca))
    try:
        await publish(nats_client, UserOnboarded(user="hank", devices=["hank-pc"]))
        first, second = await reader.take(subjects.CERT_INSTALLED, 2, within=30)
        assert first["cert_id"] != second["cert_id"]
        (retire,) = await reader.take(subjects.CERT_REVOCATION_REQUESTED, 1)
        assert retire["cert_ids"] == [first["cert_id"]]
        assert RevocationReason(retire["reason"]) == RevocationReason.SUPERSEDED
        renewals = await rpc(nats_client, "renewals.list", {})
        assert [(r["old_cert_id"], r["reason"], r["status"]) for r in renewals["items"]] == [
            (first["cert_id"], "expiring", "installed")
        ]
        # The fresh certificate has most of its life ahead: it is not renewed again.
        assert await reader.none_more(subjects.CERT_INSTALLED, wait=1.5) == []
    finally:
        issuer.cancel()
        await pc.app.stop()
        await inventory.app.stop()


async def test_renewals_through_the_web_api_and_the_cli(nats_url: str, tmp_path: Path) -> None:
    import httpx
    from typer.testing import CliRunner

    from services.cli.main import app as cli
    from services.gateway.app import build as build_gateway
    from services.gateway.settings import GatewaySettings

    inventory = build_inventory(
        InventorySettings(
            nats_url=nats_url, inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}"
        )
    )
    await inventory.app.start()
    gateway = build_gateway(GatewaySettings(nats_url=nats_url, rpc_timeout=5.0))
    try:
        async with gateway.router.lifespan_context(gateway):
            transport = httpx.ASGITransport(app=gateway)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as api:
                both = await api.post("/v1/renewals", json={"query": "CN -eq a", "cert_ids": ["x"]})
                assert both.status_code == 422
                bad = await api.post("/v1/renewals", json={"query": "CN -eq"})
                assert bad.status_code == 422
                assert bad.json()["error"]["code"] == "invalid_query"
                plan = await api.post(
                    "/v1/renewals", json={"query": "Status -eq active", "dry_run": True}
                )
                assert plan.status_code == 200
                assert (plan.json()["planned"], plan.json()["jobs_sent"]) == ([], 0)
                sent = await api.post("/v1/renewals", json={"cert_ids": ["missing"]})
                assert sent.status_code == 202
                assert sent.json()["skipped"][0]["reason"] == "no such certificate"
                listed = await api.get("/v1/renewals", params={"status": "failed"})
                assert listed.json() == {"items": [], "progress": {}, "limit": 100, "offset": 0}
    finally:
        await inventory.app.stop()
    usage = CliRunner().invoke(cli, ["renewals", "start"])
    assert usage.exit_code == 2 and "give a query or --id" in usage.output
