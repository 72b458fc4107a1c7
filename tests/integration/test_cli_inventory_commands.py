"""The ``certbus`` CLI's catalog, agent, store, job and renewal commands, run as a user runs
them: a subprocess talking to a real gateway (uvicorn on a free port) in front of a real
inventory and a real agent on a real bus, with a stand-in issuer signing the CSRs.

Each CLI run costs about a second of imports, so independent runs go side by side and each
run checks several things at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
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
from shared import pki, subjects
from shared.clock import utcnow
from shared.events import UserOnboarded
from tests.e2e.harness import free_port
from tests.integration.test_agent_onboarding_flow import stand_in_issuer
from tests.inventory_kit import BusReader, TestCA, eventually, publish

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]
DESK = "desk-01"  # a device of every user below: its agent is approved by the policy
WEB = "web-01"  # nobody's device: its agent waits for approval
QUERY = f'Machine -eq "{DESK}"'
# Validity per user, so NotAfter orders them: amy < cal < ben.
DAYS = {"amy": 10, "cal": 25, "ben": 40}


class StaggeredCA(TestCA):
    """The test CA, with each user's certificate valid for that user's number of days."""

    __test__ = False

    def sign(
        self, csr: x509.CertificateSigningRequest, days: int = 30, aged_days: int = 0
    ) -> x509.Certificate:
        (cn,) = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return super().sign(csr, days=DAYS.get(str(cn.value), days), aged_days=aged_days)


@dataclass
class Stack:
    url: str
    http: httpx.AsyncClient
    root: Path
    nc: Any


@dataclass
class Run:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self
        return json.loads(self.out)

    def ok(self) -> str:
        assert self.code == 0, self
        return self.out


@pytest.fixture
async def stack(nats_url: str, nats_client: Any, tmp_path: Path) -> AsyncIterator[Stack]:
    inventory = build_inventory(
        InventorySettings(
            nats_url=nats_url,
            inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}",
            renew_before_days=0,  # no renewal on its own: only the ones the tests ask for
        )
    )
    agents = [
        build_agent(AgentSettings(nats_url=nats_url, machine=m, root=tmp_path / m,
                                  heartbeat_seconds=0.5))
        for m in (DESK, WEB)
    ]  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        build_gateway(GatewaySettings(nats_url=nats_url, rpc_timeout=10.0)),
        host="127.0.0.1", port=port, log_level="warning"))  # fmt: skip
    await inventory.app.start()
    for a in agents:
        await a.app.start()
    issuer = asyncio.create_task(stand_in_issuer(nats_client, StaggeredCA()))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=15) as http:
            yield Stack(url=url, http=http, root=tmp_path, nc=nats_client)
    finally:
        server.should_exit = True
        await serving
        issuer.cancel()
        for a in agents:
            await a.app.stop()
        await inventory.app.stop()


async def cli(stack: Stack, *args: str) -> Run:
    env = {**os.environ, "CERTBUS_URL": stack.url, "COLUMNS": "300", "NO_COLOR": "1",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(args, proc.returncode, out.decode(), err.decode())


async def clis(stack: Stack, *commands: tuple[str, ...]) -> list[Run]:
    """Independent CLI runs, side by side (two at a time: the machine has two cores)."""
    gate = asyncio.Semaphore(2)

    async def one(args: tuple[str, ...]) -> Run:
        async with gate:
            return await cli(stack, *args)

    return list(await asyncio.gather(*(one(c) for c in commands)))


def refused(run: Run, code: str, *fragments: str, exit_code: int = 2) -> None:
    """A refusal: the exit code, and on stderr the API's error code and the fragments."""
    assert run.code == exit_code, run
    assert f"error {code}:" in run.err, run
    for fragment in fragments:
        assert fragment in run.err, (fragment, run)
    assert "Traceback" not in run.err, run


async def onboard_on_desk(stack: Stack, *users: str) -> dict[str, dict[str, Any]]:
    """Each user onboarded with the desk as their device; their certificates, once installed."""
    reader = BusReader(stack.nc)
    await publish(stack.nc, *(UserOnboarded(user=u, devices=[DESK]) for u in users))
    assert len(await reader.take(subjects.CERT_INSTALLED, len(users), within=30)) == len(users)

    async def located() -> dict[str, dict[str, Any]] | None:
        page = (await stack.http.get("/v1/certificates", params={"query": QUERY})).json()
        if page["total"] == len(users) and all(c["locations"] for c in page["items"]):
            return {c["owner"]: c for c in page["items"]}
        return None

    certs = await eventually(located, within=20)
    assert certs, "the certificates were not recorded as installed"
    return certs


async def test_certs_search_history_and_locations_through_the_cli_and_the_api(
    stack: Stack,
) -> None:
    certs = await onboard_on_desk(stack, "amy", "ben", "cal")
    amy = certs["amy"]
    by_not_after = ["amy", "cal", "ben"]

    # --- HTTP: paging with limit/offset and total, both sort orders -------------------------
    async def page(**params: Any) -> dict[str, Any]:
        response = await stack.http.get("/v1/certificates", params={"query": QUERY, **params})
        assert response.status_code == 200, response.text
        return response.json()

    first = await page(sort="NotAfter", limit=2, offset=0)
    assert (first["total"], first["limit"], first["offset"]) == (3, 2, 0)
    second = await page(sort="NotAfter", limit=2, offset=2)
    assert (second["total"], second["offset"]) == (3, 2)
    assert [c["owner"] for c in first["items"] + second["items"]] == by_not_after
    assert (await page(sort="NotAfter", limit=2, offset=3))["items"] == []
    descending = await page(sort="-NotAfter")
    assert [c["owner"] for c in descending["items"]] == by_not_after[::-1]
    assert [c["owner"] for c in (await page())["items"]] == by_not_after[::-1]  # the default
    assert [c["owner"] for c in (await page(sort="Owner"))["items"]] == ["amy", "ben", "cal"]
    not_afters = [c["not_after"] for c in descending["items"]]
    assert not_afters == sorted(not_afters, reverse=True)
    narrowed = await stack.http.get("/v1/certificates", params={
        "query": f'{QUERY} AND NotAfter -lt "%TODAY+30%"', "sort": "NotAfter"})  # fmt: skip
    assert [c["owner"] for c in narrowed.json()["items"]] == ["amy", "cal"]

    bad_params: list[tuple[dict[str, str | int], int, str]] = [
        ({"query": "CN -eq"}, 422, "invalid_query"),
        ({"query": QUERY, "sort": "Bogus"}, 422, "invalid_sort"),
        ({"query": QUERY, "limit": 0}, 422, "validation_error"),
        ({"query": QUERY, "offset": -1}, 422, "validation_error"),
    ]
    for params, status, code in bad_params:
        response = await stack.http.get("/v1/certificates", params=params)
        assert response.status_code == status, (params, response.text)
        assert response.json()["error"]["code"] == code, (params, response.text)
    bad = await stack.http.get("/v1/certificates", params={"query": "CN -eq"})
    assert "at position 7" in bad.json()["error"]["message"]

    # --- HTTP: history and locations, by id and by serial; unknown ids ----------------------
    history = (await stack.http.get(f"/v1/certificates/{amy['id']}/history")).json()
    assert history["id"] == amy["id"]
    assert [h["subject"] for h in history["items"]][:2] == ["cert.issued", "cert.installed"]
    assert all(h["event_id"] and h["occurred_at"] for h in history["items"])
    by_serial = (await stack.http.get(f"/v1/certificates/{amy['serial']}/history")).json()
    assert by_serial == history
    locations = (await stack.http.get(f"/v1/certificates/{amy['id']}/locations")).json()
    assert locations["id"] == amy["id"]
    assert [(loc["machine"], loc["store_type"], loc["store_path"], loc["alias"], loc["active"])
            for loc in locations["items"]] == [
        (DESK, "pem", "certs/user-client", "user-client-amy", True)]  # fmt: skip
    thumb = amy["thumbprint_sha256"]
    assert (await stack.http.get(f"/v1/certificates/{thumb}/locations")).json() == locations
    for path in ("/v1/certificates/nope/history", "/v1/certificates/nope/locations"):
        response = await stack.http.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"

    # --- the CLI ---------------------------------------------------------------------------
    (asc, desc, offset, table, hist_json, hist_table, loc_json, loc_table, unknown, bad_query,
     bad_sort) = await clis(
        stack,
        ("certs", "search", QUERY, "--json", "--limit", "2", "--sort", "NotAfter"),
        ("certs", "search", QUERY, "--json", "--sort", "-NotAfter"),
        ("certs", "search", QUERY, "--json", "--limit", "1", "--offset", "1", "--sort",
         "-NotAfter"),
        ("certs", "search", QUERY, "--sort", "NotAfter"),
        ("certs", "history", amy["id"], "--json"),
        ("certs", "history", amy["serial"]),
        ("certs", "locations", amy["id"], "--json"),
        ("certs", "locations", amy["id"]),
        ("certs", "history", "no-such-cert"),
        ("certs", "search", "CN -eq"),
        ("certs", "search", QUERY, "--sort", "Bogus", "--json"),
    )  # fmt: skip
    got = asc.json()
    assert (got["total"], got["limit"], got["offset"]) == (3, 2, 0)
    assert [c["owner"] for c in got["items"]] == by_not_after[:2]
    assert [c["id"] for c in got["items"]] == [certs[u]["id"] for u in by_not_after[:2]]
    assert [c["owner"] for c in desc.json()["items"]] == by_not_after[::-1]
    assert desc.json()["total"] == 3
    assert [c["owner"] for c in offset.json()["items"]] == ["cal"]

    text = table.ok()
    assert "3 of 3 matching certificates" in text
    for user in by_not_after:
        assert certs[user]["serial"] in text and f"CN={user}" in text
    rows = [line for line in text.splitlines() if "CN=" in line]
    assert [next(u for u in DAYS if f"CN={u}" in line) for line in rows] == by_not_after

    assert hist_json.json() == history["items"]
    assert "cert.issued" in hist_table.ok() and "cert.installed" in hist_table.out
    assert loc_json.json() == locations["items"]
    assert all(v in loc_table.ok() for v in (DESK, "certs/user-client", "user-client-amy"))

    refused(unknown, "not_found", "no-such-cert")
    refused(bad_query, "invalid_query", "at position 7")
    refused(bad_sort, "invalid_sort", "Bogus")
    assert bad_sort.out == ""


def legacy_certificate(cn: str = "legacy.example.com") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = utcnow()
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=9))
            .sign(key, hashes.SHA256()))  # fmt: skip


async def test_agents_approve_stores_add_and_inventory_and_jobs_through_the_cli(
    stack: Stack,
) -> None:
    async def pending() -> list[dict[str, Any]]:
        items = (await stack.http.get("/v1/agents", params={"status": "pending"})).json()["items"]
        return [a for a in items if a["machine"] == WEB]

    assert await eventually(pending), f"{WEB}'s agent did not register"

    listed, table, refused_add = await clis(
        stack,
        ("agents", "list", "--status", "pending", "--json"),
        ("agents", "list"),
        ("stores", "add", WEB, "app/tls", "--json"),
    )
    (agent,) = [a for a in listed.json() if a["machine"] == WEB]
    assert (agent["status"], agent["state"], agent["decided_by"]) == ("pending", "online", None)
    web_row = next(line for line in table.ok().splitlines() if WEB in line)
    assert "pending" in web_row and "online" in web_row
    refused(refused_add, "agent_not_approved", WEB, "approve it first")

    approved = (await cli(stack, "agents", "approve", WEB, "--json")).json()
    assert (approved["machine"], approved["status"]) == (WEB, "approved")
    assert approved["decided_by"] and approved["decided_at"]

    again, after, added = await clis(
        stack,
        ("agents", "approve", WEB),
        ("agents", "list", "--status", "approved", "--json"),
        ("stores", "add", WEB, "app/tls", "--json"),
    )
    assert f"agent {WEB} is approved" in again.ok()
    assert WEB in [a["machine"] for a in after.json()]
    store = added.json()
    assert (store["machine"], store["store_type"], store["store_path"], store["status"]) == (
        WEB, "pem", "app/tls", "approved")  # fmt: skip
    create = store["job"]
    assert (create["kind"], create["machine"], create["status"]) == ("create", WEB, "sent")

    async def finished(job_id: str) -> dict[str, Any] | None:
        job = (await stack.http.get(f"/v1/jobs/{job_id}")).json()
        return job if job["status"] != "sent" else None

    assert (await eventually(lambda: finished(create["job_id"])))["status"] == "completed"
    assert (stack.root / WEB / "app" / "tls").is_dir()
    legacy = legacy_certificate()
    (stack.root / WEB / "app" / "tls" / "legacy.crt").write_text(pki.pem(legacy))
    serial = pki.render_serial(legacy.serial_number)

    shown, stores_json, stores_table, report = await clis(
        stack,
        ("jobs", "show", create["job_id"], "--json"),
        ("stores", "list", "--machine", WEB, "--json"),
        ("stores", "list"),
        ("stores", "inventory", store["id"], "--wait", "--json"),
    )
    job = shown.json()
    assert (job["job_id"], job["kind"], job["status"]) == (create["job_id"], "create", "completed")
    assert job["result"]["created"] is True and job["error"] is None
    assert [(s["id"], s["store_path"]) for s in stores_json.json()] == [(store["id"], "app/tls")]
    store_row = next(line for line in stores_table.ok().splitlines() if store["id"] in line)
    assert all(v in store_row for v in (WEB, "pem", "app/tls", "approved"))
    inventoried = report.json()
    assert (inventoried["kind"], inventoried["status"], inventoried["machine"]) == (
        "inventory", "completed", WEB)  # fmt: skip
    assert [(e["alias"], e["serial"]) for e in inventoried["result"]["entries"]] == [
        ("legacy", serial)]  # fmt: skip

    (jobs_json, jobs_table, show_table, unknown_job, unknown_store, store_after,
     sent_table) = await clis(
        stack,
        ("jobs", "list", "--machine", WEB, "--json"),
        ("jobs", "list", "--machine", WEB, "--kind", "inventory"),
        ("jobs", "show", inventoried["job_id"]),
        ("jobs", "show", "no-such-job"),
        ("stores", "inventory", "no-such-store"),
        ("stores", "list", "--machine", WEB, "--json"),
        ("stores", "inventory", store["id"]),
    )  # fmt: skip
    jobs = jobs_json.json()
    assert [(j["job_id"], j["kind"], j["status"]) for j in jobs] == [
        (inventoried["job_id"], "inventory", "completed"),
        (create["job_id"], "create", "completed"),
    ]  # newest first
    row = next(line for line in jobs_table.ok().splitlines() if inventoried["job_id"] in line)
    assert "inventory" in row and "completed" in row and WEB in row
    assert create["job_id"] not in jobs_table.out  # --kind inventory
    text = show_table.ok()
    assert inventoried["job_id"] in text and "completed" in text and serial in text
    refused(unknown_job, "not_found", "no-such-job")
    refused(unknown_store, "not_found", "no-such-store")
    (after_inventory,) = store_after.json()
    assert after_inventory["entries"] == 1 and after_inventory["inventoried_at"]
    assert after_inventory["last_job_id"] == inventoried["job_id"]
    assert "inventory job" in sent_table.ok() and ": sent" in sent_table.out


async def test_renewals_start_and_list_through_the_cli_and_the_api(stack: Stack) -> None:
    amy = (await onboard_on_desk(stack, "amy"))["amy"]
    selection = "Owner -eq amy"

    plan_json, plan_table, bad_query, neither = await clis(
        stack,
        ("renewals", "start", selection, "--dry-run", "--json"),
        ("renewals", "start", selection, "--dry-run"),
        ("renewals", "start", "CN -xx a", "--json"),
        ("renewals", "start", "--json"),
    )
    plan = plan_json.json()
    assert (plan["dry_run"], plan["certificates"], plan["jobs_sent"], plan["skipped"]) == (
        True, 1, 0, [])  # fmt: skip
    (step,) = plan["planned"]
    assert (step["cert_id"], step["machine"], step["store_path"], step["alias"]) == (
        amy["id"], DESK, "certs/user-client", "user-client-amy")  # fmt: skip
    assert "plan (dry run)" in plan_table.ok() and amy["id"] in plan_table.out
    refused(bad_query, "invalid_query", "at position")
    refused(neither, "usage", "give a query or --id")

    # HTTP: a dry run is 200 and sends nothing; a body selecting nothing is refused.
    dry = await stack.http.post("/v1/renewals", json={"query": selection, "dry_run": True})
    assert dry.status_code == 200 and dry.json()["planned"] == plan["planned"]
    empty = await stack.http.post("/v1/renewals", json={})
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "validation_error"
    bad = await stack.http.post("/v1/renewals", json={"query": "CN -xx a"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_query"
    assert (await stack.http.get("/v1/renewals")).json()["items"] == []

    started = await cli(stack, "renewals", "start", selection, "--reason", "test", "--json")
    assert started.json()["jobs_sent"] == 1
    resumed = await stack.http.post("/v1/renewals", json={"cert_ids": [amy["id"]]})
    assert resumed.status_code == 202 and resumed.json()["jobs_sent"] == 0  # never twice

    async def installed() -> dict[str, Any] | None:
        got = (await stack.http.get("/v1/renewals", params={"cert_id": amy["id"]})).json()
        return got if got["progress"] == {"installed": 1} else None

    progress = await eventually(installed, within=30)
    assert progress, "the renewal was not installed"
    (renewal,) = progress["items"]
    assert renewal["old_cert_id"] == amy["id"] and renewal["new_cert_id"]
    assert renewal["new_cert_id"] != amy["id"] and renewal["machine"] == DESK

    listed, table = await clis(stack, ("renewals", "list", "--json"), ("renewals", "list"))
    assert listed.json() == (await stack.http.get("/v1/renewals")).json()
    assert "renewals: 1 installed" in table.ok()
    assert amy["id"] in table.out and renewal["new_cert_id"] in table.out
    new = (await stack.http.get(f"/v1/certificates/{renewal['new_cert_id']}/locations")).json()
    assert [(loc["machine"], loc["alias"], loc["active"]) for loc in new["items"]] == [
        (DESK, "user-client-amy", True)]  # fmt: skip


async def test_a_refused_stores_add_leaves_no_store_behind(stack: Stack) -> None:
    async def pending() -> bool:
        items = (await stack.http.get("/v1/agents", params={"status": "pending"})).json()["items"]
        return any(a["machine"] == WEB for a in items)

    assert await eventually(pending), f"{WEB}'s agent did not register"
    refused(await cli(stack, "stores", "add", WEB, "app/tls", "--json"), "agent_not_approved")
    assert (await cli(stack, "stores", "list", "--machine", WEB, "--json")).json() == []


async def test_the_table_shows_a_subject_with_square_brackets_as_it_is(stack: Stack) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from shared.events import CertRequested

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web [prod] [/old]")]))
           .sign(key, hashes.SHA256()))  # fmt: skip
    request = CertRequested(request_id="brackets-1", template="tls-server", owner="ops",
                            csr_pem=csr.public_bytes(Encoding.PEM).decode())  # fmt: skip
    await publish(stack.nc, TestCA().issue(request))

    async def recorded() -> list[dict[str, Any]]:
        params = {"query": "Owner -eq ops"}
        return (await stack.http.get("/v1/certificates", params=params)).json()["items"]

    (cert,) = await eventually(recorded)
    assert cert["subject"] == "CN=web [prod] [/old]"  # the catalog has it right
    table = await cli(stack, "certs", "search", "Owner -eq ops")
    assert table.code == 0 and "Traceback" not in table.err, table
    assert "CN=web [prod] [/old]" in table.out, table


async def test_an_error_message_with_square_brackets_is_printed_as_it_is(stack: Stack) -> None:
    query = 'Status -eq "[/x]"'
    answer = await stack.http.get("/v1/certificates", params={"query": query})
    assert answer.status_code == 422 and "'[/x]'" in answer.json()["error"]["message"]
    refused(await cli(stack, "certs", "search", query), "invalid_query", "'[/x]'", "position")
