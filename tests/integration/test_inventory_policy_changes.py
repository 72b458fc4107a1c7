"""What a change of department or an offboarding in disable mode does, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.inventory.app import build
from services.inventory.settings import InventorySettings
from shared import subjects
from shared.events import (
    CertMetadataChanged,
    OffboardingMode,
    UserOffboarded,
    UserOnboarded,
    UserUpdated,
)
from shared.runtime import ServiceRuntime
from tests.integration.test_inventory_flows import requested_from
from tests.inventory_kit import BusReader, TestCA, eventually, publish

pytestmark = pytest.mark.integration

POLICY = {
    "rules": [
        {"name": "everyone", "match": {}, "provision": [{"template": "user-client"}]},
        {"name": "engineering", "match": {"department": "engineering"},
         "provision": [{"template": "vpn", "store_type": "pkcs12",
                        "store_path": "vpn/{user}.p12"}]},
        {"name": "finance", "match": {"department": "finance"},
         "provision": [{"template": "payments", "store_type": "jks",
                        "store_path": "java/payments.jks"}]},
    ]
}  # fmt: skip


@pytest.fixture
async def inventory(
    nats_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[ServiceRuntime]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    rt = build(
        InventorySettings(
            nats_url=nats_url, inventory_database_url=database_url, policy_file=policy
        )
    )
    await rt.app.start()
    yield rt
    await rt.app.stop()


async def rpc(nc: Any, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
    reply = await nc.request(
        subjects.rpc("inventory", operation), json.dumps(payload).encode(), timeout=10
    )
    return json.loads(reply.data)["result"]


async def test_moving_to_another_department_provisions_the_new_set_and_retires_the_old(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader, ca = BusReader(nats_client), TestCA()
    await publish(
        nats_client, UserOnboarded(user="gus", department="engineering", devices=["gus-laptop"])
    )
    jobs = {j["template"]: j for j in await reader.take(subjects.AGENT_JOBS_WILDCARD, 2)}
    assert set(jobs) == {"user-client", "vpn"}
    assert jobs["vpn"]["target"]["store_path"] == "vpn/gus.p12"
    vpn = ca.issue(requested_from(jobs["vpn"])[0])
    await publish(nats_client, vpn)
    assert [j["kind"] for j in await reader.take(subjects.AGENT_JOBS_WILDCARD, 1)] == ["add"]

    moved = UserUpdated(user="gus", department="finance", devices=["gus-laptop"])
    await publish(nats_client, moved)
    (payments,) = await reader.take(subjects.AGENT_JOBS_WILDCARD, 1)
    assert (payments["kind"], payments["template"]) == ("reenroll", "payments")
    assert payments["target"]["store_type"] == "jks"
    (retire,) = await reader.take(subjects.CERT_REVOCATION_REQUESTED, 1)
    assert retire["cert_ids"] == [vpn.cert_id]
    assert retire["reason"] == 3 and "vpn" in retire["comment"]
    assert retire["correlation_id"] == moved.correlation_id

    user = await rpc(nats_client, "users.get", {"user": "gus"})
    states = {(p["template"], p["status"]) for p in user["provisioning"]}
    assert states == {("user-client", "waiting"), ("vpn", "retired"), ("payments", "waiting")}
    assert user["department"] == "finance" and user["devices"] == ["gus-laptop"]


async def test_a_disable_mode_offboarding_completes_when_every_certificate_is_disabled(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader, ca = BusReader(nats_client), TestCA()
    await publish(nats_client, UserOnboarded(user="hana", devices=["hana-pc"]))
    (job,) = await reader.take(subjects.AGENT_JOBS_WILDCARD, 1)
    issued = ca.issue(requested_from(job)[0])
    await publish(nats_client, issued)
    await reader.take(subjects.AGENT_JOBS_WILDCARD, 1)

    await publish(nats_client, UserOffboarded(user="hana", mode=OffboardingMode.DISABLE))

    async def opened() -> dict[str, Any] | None:
        reply = await nats_client.request(
            subjects.rpc("inventory", "offboarding.get"),
            json.dumps({"user": "hana"}).encode(),
            timeout=10,
        )
        return json.loads(reply.data).get("result")

    progress = await eventually(opened)
    assert progress["status"] == "open" and progress["pending"]["not_revoked"] == [issued.cert_id]
    assert await reader.none_more(subjects.USER_OFFBOARDING_COMPLETED) == []

    await publish(
        nats_client,
        CertMetadataChanged(cert_id=issued.cert_id, field="isEnabled", old="true", new="false"),
    )
    (done,) = await reader.take(subjects.USER_OFFBOARDING_COMPLETED, 1)
    assert (done["mode"], done["found"], done["revoked"]) == ("disable", 1, 0)
    progress = await rpc(nats_client, "offboarding.get", {"user": "hana"})
    assert progress["status"] == "completed" and progress["disabled"] == 1
    assert progress["completed_at"] >= progress["started_at"]
