"""Devices changing hands — ``device.assigned``, ``device.unassigned``, ``device.decommissioned``
— and the identity RPCs (``users.list``, ``users.get``, ``devices.list``, ``devices.get``),
against a real nats-server and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.inventory.app import build
from services.inventory.identities import request_id_for
from services.inventory.settings import InventorySettings
from shared import subjects
from shared.events import (
    CertIssued,
    DeviceAssigned,
    DeviceDecommissioned,
    DeviceUnassigned,
    UserOffboarded,
    UserOnboarded,
    UserUpdated,
    derived_id,
)
from shared.pki import RevocationReason
from shared.runtime import ServiceRuntime
from tests.integration.test_inventory_flows import installed, requested_from
from tests.inventory_kit import BusReader, TestCA, eventually, publish

pytestmark = pytest.mark.integration

JOBS = subjects.AGENT_JOBS_WILDCARD
REVOCATIONS = subjects.CERT_REVOCATION_REQUESTED
TEMPLATE = "user-client"
# The policy of these tests, so that edits to infra/policy.yaml do not change what they prove.
POLICY = {"rules": [{"name": "everyone", "match": {}, "provision": [{"template": TEMPLATE}]}]}


@pytest.fixture
async def inventory(
    nats_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[ServiceRuntime]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    rt = build(
        InventorySettings(
            nats_url=nats_url,
            inventory_database_url=database_url,
            policy_file=policy,
            max_deliver=3,
        )
    )
    await rt.app.start()
    yield rt
    await rt.app.stop()


async def call(nc: Any, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
    reply = await nc.request(
        subjects.rpc("inventory", operation), json.dumps(payload).encode(), timeout=10
    )
    return json.loads(reply.data)


async def rpc(nc: Any, operation: str, payload: dict[str, Any]) -> Any:
    answer = await call(nc, operation, payload)
    assert answer["ok"], answer
    return answer["result"]


async def provisioned(nc: Any, reader: BusReader, ca: TestCA, job: dict[str, Any]) -> CertIssued:
    """Play agent and issuer for a reenroll job: CSR, issuance, install; wait for the location."""
    issued = ca.issue(requested_from(job)[0])
    await publish(nc, issued)
    (add,) = await reader.take(JOBS, 1)
    assert (add["kind"], add["machine"], add["cert_id"]) == ("add", job["machine"], issued.cert_id)
    await publish(nc, installed(issued))

    async def located() -> bool:
        got = await rpc(nc, "certs.get", {"id": issued.cert_id})
        return bool(got["locations"])

    assert await eventually(located)
    return issued


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def test_a_device_assigned_unassigned_and_decommissioned(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader, ca = BusReader(nats_client), TestCA()
    laptop, desktop = "nina-laptop", "nina-desktop.corp.example"

    onboarded = UserOnboarded(user="nina", email="nina@example.com", department="eng",
                              devices=[laptop])  # fmt: skip
    await publish(nats_client, onboarded)
    (first,) = await reader.take(JOBS, 1)
    assert (first["kind"], first["machine"]) == ("reenroll", laptop)
    on_laptop = await provisioned(nats_client, reader, ca, first)

    # device.assigned: the second device gets its own re-enrollment job, on its agent's subject.
    assigned = DeviceAssigned(device=desktop, user="nina")
    await publish(nats_client, assigned)
    (job,) = await reader.take(JOBS, 1)
    assert job["kind"] == "reenroll" and job["machine"] == desktop
    # ... on the desktop's own subject (agent.<token>.jobs, the name's dots encoded).
    (on_its_subject,) = await BusReader(nats_client).take(subjects.agent_jobs(desktop), 1)
    assert on_its_subject["job_id"] == job["job_id"]
    assert subjects.agent_jobs(desktop) == "agent.nina-desktop_2e_corp_2e_example.jobs"
    assert job["request_id"] == request_id_for("nina", desktop, TEMPLATE)
    assert job["job_id"] == derived_id("job", job["request_id"], "reenroll")
    assert (job["template"], job["owner"], job["subject_dn"]) == (TEMPLATE, "nina", "CN=nina")
    assert job["sans"] == ["email:nina@example.com"]
    assert job["target"]["machine"] == desktop
    assert job["target"]["store_path"] == f"certs/{TEMPLATE}"
    assert job["target"]["alias"] == f"{TEMPLATE}-nina"
    assert job["correlation_id"] == assigned.correlation_id
    # Assigning it again (a new event, the same link) sends nothing; the laptop got nothing new.
    await publish(nats_client, DeviceAssigned(device=desktop, user="nina"))
    assert await reader.none_more(JOBS) == []
    on_desktop = await provisioned(nats_client, reader, ca, job)

    user = await rpc(nats_client, "users.get", {"user": "nina"})
    assert user["devices"] == sorted([laptop, desktop])
    assert user["certificates"] == 2
    device = await rpc(nats_client, "devices.get", {"name": desktop})
    assert (device["name"], device["status"], device["users"]) == (desktop, "active", ["nina"])
    assert device["decommissioned_at"] is None
    assert [(loc["cert_id"], loc["machine"], loc["alias"]) for loc in device["locations"]] == [
        (on_desktop.cert_id, desktop, f"{TEMPLATE}-nina")
    ]
    assert device["agent"] is None  # no agent ever reported from it

    # device.unassigned: what the desktop held for nina is to be revoked (affiliationChanged).
    unassigned = DeviceUnassigned(device=desktop, user="nina")
    await publish(nats_client, unassigned)
    (retire,) = await reader.take(REVOCATIONS, 1)
    assert retire["cert_ids"] == [on_desktop.cert_id]
    assert retire["reason"] == RevocationReason.AFFILIATION_CHANGED == 3
    assert retire["comment"] == f"{desktop} is no longer assigned to nina"
    assert retire["correlation_id"] == unassigned.correlation_id
    assert retire["causation_id"] == unassigned.event_id
    # Again (a redelivery under another message id): nothing more; the laptop's stays.
    await publish(nats_client, unassigned.model_copy(update={"event_id": "unassigned-again"}))
    assert await reader.none_more(REVOCATIONS) == []
    assert await reader.none_more(JOBS, wait=0.2) == []

    user = await rpc(nats_client, "users.get", {"user": "nina"})
    assert user["devices"] == [laptop]
    slots = {(p["device"], p["status"], p["cert_id"]) for p in user["provisioning"]}
    assert slots == {
        (laptop, "issued", on_laptop.cert_id),
        (desktop, "retired", on_desktop.cert_id),
    }
    device = await rpc(nats_client, "devices.get", {"name": desktop})
    assert (device["status"], device["users"]) == ("active", [])

    # device.decommissioned: the laptop is gone; devices.get says so, and when.
    decommissioned = DeviceDecommissioned(device=laptop)
    await publish(nats_client, decommissioned)

    async def gone() -> dict[str, Any] | None:
        got = await rpc(nats_client, "devices.get", {"name": laptop})
        return got if got["status"] == "decommissioned" else None

    device = await eventually(gone)
    assert device, "devices.get never showed the laptop decommissioned"
    assert when(device["decommissioned_at"]) == decommissioned.occurred_at
    assert device["users"] == []
    assert [loc["cert_id"] for loc in device["locations"]] == [on_laptop.cert_id]
    user = await rpc(nats_client, "users.get", {"user": "nina"})
    assert user["devices"] == []
    assert {p["status"] for p in user["provisioning"]} == {"retired"}
    # Inventory asks for no revocation itself (the revocation service revokes what was on a
    # decommissioned device), and a decommissioned device is never provisioned again.
    assert await reader.none_more(REVOCATIONS, wait=0.5) == []
    await publish(nats_client, DeviceAssigned(device=laptop, user="nina"))
    await publish(nats_client, UserUpdated(user="nina", email="nina@example.com",
                                           department="eng", devices=[laptop]))  # fmt: skip
    assert await reader.none_more(JOBS) == []
    listed = await rpc(nats_client, "devices.list", {})
    assert {d["name"]: d["status"] for d in listed["items"]} == {
        desktop: "active",
        laptop: "decommissioned",
    }


async def test_a_device_assigned_without_a_user_is_recorded_and_gets_nothing(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader = BusReader(nats_client)
    await publish(nats_client, DeviceAssigned(device="spare-laptop"))

    async def known() -> dict[str, Any] | None:
        answer = await call(nats_client, "devices.get", {"name": "spare-laptop"})
        return answer.get("result")

    device = await eventually(known)
    assert device and (device["status"], device["users"], device["locations"]) == ("active", [], [])
    assert await reader.none_more(JOBS) == []
    # Unassigning a device nobody has, or a user who does not hold it, asks for nothing.
    await publish(nats_client, DeviceUnassigned(device="spare-laptop"),
                  DeviceUnassigned(device="spare-laptop", user="nobody"))  # fmt: skip
    assert await reader.none_more(REVOCATIONS) == []


async def test_users_and_devices_are_listed_filtered_and_paged(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader = BusReader(nats_client)
    people = {  # user: (department, devices)
        "ada": ("eng", ["ada-1", "ada-2"]),
        "ben": ("ops", ["ben-1"]),
        "cy": ("eng", ["cy-1", "shared-kiosk"]),
        "dee": ("eng", []),
        "eve": ("ops", ["eve-1", "shared-kiosk"]),
    }
    await publish(nats_client, *(
        UserOnboarded(user=u, email=f"{u}@example.com", department=dep, roles=["staff"], devices=ds)
        for u, (dep, ds) in people.items()
    ))  # fmt: skip
    assert len(await reader.take(JOBS, 7)) == 7  # one per (user, device)
    await publish(nats_client, UserOffboarded(user="ben"))

    async def offboarded() -> bool:
        got = await rpc(nats_client, "users.list", {"status": "offboarded"})
        return got["total"] == 1

    assert await eventually(offboarded)

    everyone = await rpc(nats_client, "users.list", {})
    assert everyone["total"] == 5
    assert [u["user"] for u in everyone["items"]] == sorted(people)
    by_name = {u["user"]: u for u in everyone["items"]}
    for name, (dep, ds) in people.items():
        u = by_name[name]
        assert (u["email"], u["department"], u["roles"]) == (f"{name}@example.com", dep, ["staff"])
        assert u["devices"] == sorted(ds)
        assert u["status"] == ("offboarded" if name == "ben" else "active")
    assert by_name["ben"]["offboarded_at"] is not None and by_name["ada"]["offboarded_at"] is None

    pages = [await rpc(nats_client, "users.list", {"limit": 2, "offset": o}) for o in (0, 2, 4, 6)]
    assert [[u["user"] for u in p["items"]] for p in pages] == [
        ["ada", "ben"],
        ["cy", "dee"],
        ["eve"],
        [],
    ]
    assert {p["total"] for p in pages} == {5}

    eng = await rpc(nats_client, "users.list", {"department": "eng", "limit": 2, "offset": 1})
    assert eng["total"] == 3 and [u["user"] for u in eng["items"]] == ["cy", "dee"]
    ops_active = await rpc(nats_client, "users.list", {"department": "ops", "status": "active"})
    assert ops_active["total"] == 1 and [u["user"] for u in ops_active["items"]] == ["eve"]
    gone = await rpc(nats_client, "users.list", {"status": "offboarded"})
    assert [u["user"] for u in gone["items"]] == ["ben"]

    names = sorted({d for _, ds in people.values() for d in ds})
    devices = await rpc(nats_client, "devices.list", {})
    assert devices["total"] == len(names) == 6
    assert [d["name"] for d in devices["items"]] == names
    kiosk = next(d for d in devices["items"] if d["name"] == "shared-kiosk")
    assert kiosk["users"] == ["cy", "eve"] and kiosk["status"] == "active"
    assert all(d["decommissioned_at"] is None and d["created_at"] for d in devices["items"])
    pages = [await rpc(nats_client, "devices.list", {"limit": 4, "offset": o}) for o in (0, 4)]
    assert [d["name"] for p in pages for d in p["items"]] == names
    assert [len(p["items"]) for p in pages] == [4, 2]
    assert {p["total"] for p in pages} == {6}
    beyond = await rpc(nats_client, "devices.list", {"limit": 4, "offset": 6})
    assert beyond == {"items": [], "total": 6}

    one = await rpc(nats_client, "devices.get", {"name": "shared-kiosk"})
    assert (one["users"], one["locations"], one["agent"]) == (["cy", "eve"], [], None)
    dee = await rpc(nats_client, "users.get", {"user": "dee"})
    assert dee["devices"] == [] and dee["provisioning"] == [] and dee["certificates"] == 0

    for operation, payload, code, status in [
        ("devices.get", {"name": "no-such-device"}, "not_found", 404),
        ("users.get", {"user": "no-such-user"}, "not_found", 404),
        ("devices.get", {}, "invalid_request", 422),
    ]:
        answer = await call(nats_client, operation, payload)
        assert not answer["ok"], (operation, answer)
        assert (answer["error"]["code"], answer["error"]["status"]) == (code, status)


async def test_a_device_assigned_before_the_user_is_onboarded_is_provisioned_with_the_rest(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader = BusReader(nats_client)
    await publish(nats_client, DeviceAssigned(device="pat-desktop", user="pat"))

    async def linked() -> bool:
        answer = await call(nats_client, "devices.get", {"name": "pat-desktop"})
        return answer["ok"] and answer["result"]["users"] == ["pat"]

    assert await eventually(linked)
    assert await reader.none_more(JOBS, wait=0.5) == []  # no user yet: nothing to provision
    await publish(nats_client, UserOnboarded(user="pat", devices=["pat-laptop"]))
    jobs = await reader.take(JOBS, 2, within=5.0)
    # Inventory does know both devices are pat's ...
    user = await rpc(nats_client, "users.get", {"user": "pat"})
    assert user["devices"] == ["pat-desktop", "pat-laptop"]
    # ... yet only the laptop gets a certificate.
    assert sorted((j["kind"], j["machine"]) for j in jobs) == [
        ("reenroll", "pat-desktop"),
        ("reenroll", "pat-laptop"),
    ]
    assert {p["device"] for p in user["provisioning"]} == {"pat-desktop", "pat-laptop"}


async def test_an_onboarding_naming_a_device_already_assigned_to_the_user_is_applied(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader = BusReader(nats_client)
    await publish(nats_client, DeviceAssigned(device="quin-laptop", user="quin"))

    async def linked() -> bool:
        answer = await call(nats_client, "devices.get", {"name": "quin-laptop"})
        return answer["ok"] and answer["result"]["users"] == ["quin"]

    assert await eventually(linked)
    await publish(nats_client, UserOnboarded(user="quin", email="quin@example.com",
                                             devices=["quin-laptop"]))  # fmt: skip
    jobs = await reader.take(JOBS, 1, within=5.0)
    dead = await BusReader(nats_client).none_more(subjects.dead_letter(subjects.USER_ONBOARDED))
    assert [d["user"] for d in dead] == [], "the onboarding was dead-lettered"
    assert [(j["kind"], j["machine"]) for j in jobs] == [("reenroll", "quin-laptop")]
    user = await rpc(nats_client, "users.get", {"user": "quin"})
    assert (user["email"], user["devices"]) == ("quin@example.com", ["quin-laptop"])


@pytest.mark.parametrize("leaves", ["unassigned", "decommissioned"])
async def test_a_certificate_issued_after_its_device_left_the_user_is_not_installed_there(
    inventory: ServiceRuntime, nats_client: Any, leaves: str
) -> None:
    """The agent was offline: it answers the reenroll job only after the device left the user."""
    reader, ca = BusReader(nats_client), TestCA()
    await publish(nats_client, UserOnboarded(user="omar", devices=["omar-laptop"]))
    assert len(await reader.take(subjects.agent_jobs("omar-laptop"), 1)) == 1
    await publish(nats_client, DeviceAssigned(device="omar-desktop", user="omar"))
    (job,) = await reader.take(subjects.agent_jobs("omar-desktop"), 1)
    assert job["kind"] == "reenroll"
    if leaves == "unassigned":
        await publish(nats_client, DeviceUnassigned(device="omar-desktop", user="omar"))
    else:
        await publish(nats_client, DeviceDecommissioned(device="omar-desktop"))

    async def left() -> bool:
        user = await rpc(nats_client, "users.get", {"user": "omar"})
        return user["devices"] == ["omar-laptop"]

    assert await eventually(left)
    assert await reader.none_more(REVOCATIONS, wait=0.5) == []  # nothing was issued yet
    late = ca.issue(requested_from(job)[0])
    await publish(nats_client, late)

    async def recorded() -> bool:
        answer = await call(nats_client, "certs.get", {"id": late.cert_id})
        return answer["ok"]

    assert await eventually(recorded)
    sent = await reader.none_more(subjects.agent_jobs("omar-desktop"), wait=1.5)
    assert [j["kind"] for j in sent] == [], "an install job went to a device omar no longer has"
    if leaves == "unassigned":
        (retire,) = await reader.take(REVOCATIONS, 1, within=3.0)
        assert retire["cert_ids"] == [late.cert_id]
        assert retire["reason"] == RevocationReason.AFFILIATION_CHANGED
