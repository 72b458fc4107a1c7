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
from tests.inventory_kit import (
    SERVER_KEY_POLICY,
    BusReader,
    TestCA,
    cert_and_key_match,
    eventually,
    publish,
    stand_in_issuer,
)

pytestmark = pytest.mark.integration


async def rpc(nc: Any, op: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await nc.request(subjects.rpc("inventory", op), json.dumps(body).encode(), timeout=10)
    answer = json.loads(reply.data)
    assert "result" in answer, answer
    return answer["result"]


async def installed_at(nc: Any, cert_id: str, places: int = 1) -> dict[str, Any] | None:
    reply = await nc.request(
        subjects.rpc("inventory", "certs.get"), json.dumps({"id": cert_id}).encode(), timeout=10
    )
    cert = json.loads(reply.data).get("result")
    return cert if cert and len(cert["locations"]) >= places else None


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
    issuer = asyncio.create_task(
        stand_in_issuer(nats_client, ca, "aging-issuer", lambda r: 0 if r.renewal_of else 26)
    )
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


# --- renewal's bookkeeping, with the agents and the issuer played on the bus ---------------


def csr_request(request_id: str, renewal_of: str | None = None, **fields: Any) -> CertRequested:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ivy")]))
        .sign(key, hashes.SHA256())
    )
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    return CertRequested(request_id=request_id, template="user-client", csr_pem=pem,
                         owner="ivy", renewal_of=renewal_of, **fields)  # fmt: skip


def installed(cert: Any, machine: str, alias: str) -> Any:
    from shared.events import CertInstalled, StoreTarget

    return CertInstalled(
        cert_id=cert.cert_id, serial=cert.serial, thumbprint_sha256=cert.thumbprint_sha256,
        target=StoreTarget(machine=machine, store_path="certs/user-client", alias=alias),
    )  # fmt: skip


@pytest.fixture
async def inventory_only(nats_url: str, tmp_path: Path) -> Any:
    rt = build_inventory(InventorySettings(
        nats_url=nats_url, inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}",
        renew_before_days=0))  # fmt: skip
    await rt.app.start()
    yield rt
    await rt.app.stop()


async def test_a_certificate_in_two_places_is_retired_once_both_have_the_new_one_and_a_failed_place_is_tried_again(  # noqa: E501
    inventory_only: Any, nats_client: Any
) -> None:
    from shared.events import AgentJobFailed, JobKind

    reader, ca = BusReader(nats_client), TestCA()
    old = ca.issue(csr_request("ivy-first"))
    await publish(nats_client, old, installed(old, "ivy-laptop", "ivy"),
                  installed(old, "ivy-desktop", "ivy"))  # fmt: skip

    assert await eventually(lambda: installed_at(nats_client, old.cert_id, places=2))
    started = await rpc(nats_client, "renewals.start", {"cert_ids": [old.cert_id]})
    assert started["jobs_sent"] == 2
    (laptop_job,) = await reader.take(subjects.agent_jobs("ivy-laptop"), 1)
    (desktop_job,) = await reader.take(subjects.agent_jobs("ivy-desktop"), 1)
    assert laptop_job["renewal_of"] == desktop_job["renewal_of"] == old.cert_id

    # The laptop's place is done; the desktop's re-enrollment fails: the old one stays good.
    new_laptop = ca.issue(csr_request(laptop_job["request_id"], old.cert_id,
                                      target=laptop_job["target"]))  # fmt: skip
    await publish(nats_client, new_laptop, installed(new_laptop, "ivy-laptop", "ivy"))
    failed = AgentJobFailed(
        job_id=desktop_job["job_id"], machine="ivy-desktop", kind=JobKind.REENROLL,
        error="disk full",
    )  # fmt: skip
    await publish(nats_client, failed)

    async def statuses() -> dict[str, int] | None:
        progress = (await rpc(nats_client, "renewals.list", {}))["progress"]
        return progress if progress == {"installed": 1, "failed": 1} else None

    assert await eventually(statuses)
    assert await reader.none_more(subjects.CERT_REVOCATION_REQUESTED, wait=0.5) == []

    # Asking again retries only the failed place, under a new request id.
    again = await rpc(nats_client, "renewals.start", {"cert_ids": [old.cert_id]})
    assert again["jobs_sent"] == 1
    assert [p["machine"] for p in again["planned"]] == ["ivy-desktop"]
    (retry,) = await reader.take(subjects.agent_jobs("ivy-desktop"), 1)
    assert retry["request_id"] != desktop_job["request_id"]
    new_desktop = ca.issue(csr_request(retry["request_id"], old.cert_id, target=retry["target"]))
    await publish(nats_client, new_desktop, installed(new_desktop, "ivy-desktop", "ivy"))
    (retire,) = await reader.take(subjects.CERT_REVOCATION_REQUESTED, 1)
    assert retire["cert_ids"] == [old.cert_id]
    assert RevocationReason(retire["reason"]) == RevocationReason.SUPERSEDED
    assert new_laptop.cert_id in retire["comment"] and new_desktop.cert_id in retire["comment"]
    # Redelivered reports change nothing.
    await publish(nats_client, installed(new_desktop, "ivy-desktop", "ivy").model_copy(
        update={"event_id": "again"}))  # fmt: skip
    assert await reader.none_more(subjects.CERT_REVOCATION_REQUESTED, wait=0.5) == []


async def test_a_renewal_is_cancelled_when_the_old_certificate_is_revoked_meanwhile(
    inventory_only: Any, nats_client: Any
) -> None:
    from shared.clock import utcnow
    from shared.events import CertRevoked

    reader, ca = BusReader(nats_client), TestCA()
    old = ca.issue(csr_request("ivy-compromised"))
    await publish(nats_client, old, installed(old, "ivy-laptop", "ivy"))
    await eventually(lambda: installed_at(nats_client, old.cert_id))
    assert (await rpc(nats_client, "renewals.start", {"cert_ids": [old.cert_id]}))["jobs_sent"] == 1
    (job,) = await reader.take(subjects.agent_jobs("ivy-laptop"), 1)
    await publish(
        nats_client,
        CertRevoked(
            cert_id=old.cert_id,
            serial=old.serial,
            issuer_ca=old.issuer_ca,
            owner="ivy",
            reason=RevocationReason.KEY_COMPROMISE,
            comment="laptop stolen",
            revoked_at=utcnow(),
        ),
    )

    async def revoked() -> bool:
        return (await rpc(nats_client, "certs.get", {"id": old.cert_id}))["status"] == "revoked"

    assert await eventually(revoked)
    (remove,) = await reader.take(subjects.agent_jobs("ivy-laptop"), 1)
    assert remove["kind"] == "remove"
    new = ca.issue(csr_request(job["request_id"], old.cert_id, target=job["target"]))
    await publish(nats_client, new)
    (unused,) = await reader.take(subjects.CERT_REVOCATION_REQUESTED, 1)
    assert unused["cert_ids"] == [new.cert_id] and "keyCompromise" in unused["comment"]
    assert await reader.none_more(subjects.agent_jobs("ivy-laptop"), wait=0.5) == []  # no install
    (row,) = (await rpc(nats_client, "renewals.list", {}))["items"]
    assert (row["status"], row["new_cert_id"]) == ("cancelled", new.cert_id)


async def test_a_certificate_whose_key_the_server_made_is_renewed_the_same_way(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(SERVER_KEY_POLICY)
    issuer = build_issuer(issuer_settings(tmp_path / "issuer", nats_url))
    inventory = build_inventory(InventorySettings(
        nats_url=nats_url, policy_file=tmp_path / "policy.yaml",
        inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}"))  # fmt: skip
    kiosk = build_agent(AgentSettings(nats_url=nats_url, machine="kiosk-9",
                                      root=tmp_path / "kiosk-9"))  # fmt: skip
    reader = BusReader(nats_client)
    for rt in (issuer, inventory, kiosk):
        await rt.app.start()
    cert_file = tmp_path / "kiosk-9" / "certs" / "machine-client" / "machine-client.crt"
    key_file = cert_file.with_suffix(".key")
    try:
        await publish(nats_client, UserOnboarded(user="hall", roles=["kiosk"], devices=["kiosk-9"]))
        (first,) = await reader.take(subjects.CERT_INSTALLED, 1, within=30)

        async def reported() -> bool:
            found = await rpc(nats_client, "jobs.list", {"machine": "kiosk-9", "kind": "reenroll"})
            return any(j["status"] == "completed" for j in found["items"])

        assert await eventually(reported, within=20)
        assert await eventually(lambda: installed_at(nats_client, first["cert_id"]), within=20)
        old_key = key_file.read_bytes()
        started = await rpc(nats_client, "renewals.start", {"cert_ids": [first["cert_id"]]})
        assert started["jobs_sent"] == 1

        # (The issued certificate's own install job reports the first one again: skip it.)
        async def renewed() -> dict[str, Any] | None:
            for report in await reader.take(subjects.CERT_INSTALLED, 1, within=1):
                if report["cert_id"] != first["cert_id"]:
                    return report
            return None

        second = await eventually(renewed, within=30)
        assert (
            second and key_file.read_bytes() != old_key and cert_and_key_match(cert_file, key_file)
        )
        (retire,) = await reader.take(subjects.CERT_REVOCATION_REQUESTED, 1, within=20)
        assert retire["cert_ids"] == [first["cert_id"]]
        assert RevocationReason(retire["reason"]) == RevocationReason.SUPERSEDED
        assert await reader.none_more(subjects.CERT_REQUESTED, wait=0.3) == []  # no CSR at all
        progress = await rpc(nats_client, "renewals.list", {})
        assert progress["progress"] == {"installed": 1}
    finally:
        for rt in (kiosk, inventory, issuer):
            await rt.app.stop()


async def test_a_leavers_certificates_are_not_renewed_even_in_disable_mode(
    inventory_only: Any, nats_client: Any
) -> None:
    from shared.events import OffboardingMode, UserOffboarded

    ca = TestCA()
    old = ca.issue(csr_request("ivy-leaving"))
    await publish(nats_client, UserOnboarded(user="ivy"), old, installed(old, "ivy-laptop", "ivy"))
    assert await eventually(lambda: installed_at(nats_client, old.cert_id))
    await publish(nats_client, UserOffboarded(user="ivy", mode=OffboardingMode.DISABLE))

    async def gone() -> bool:
        return (await rpc(nats_client, "users.get", {"user": "ivy"}))["status"] == "offboarded"

    assert await eventually(gone)
    answer = await rpc(nats_client, "renewals.start", {"cert_ids": [old.cert_id]})
    assert answer["jobs_sent"] == 0
    assert answer["skipped"] == [{"cert_id": old.cert_id, "reason": "ivy was offboarded"}]
