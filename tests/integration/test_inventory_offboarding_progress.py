"""A completed offboarding keeps reporting what it completed: a certificate installed later on
a device that once was the leaver's (a new user of a shared PC) is not "pending" for it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared import subjects
from shared.clock import utcnow
from shared.events import CertRemoved, CertRevoked, UserOffboarded, UserOnboarded
from shared.pki import RevocationReason
from shared.runtime import ServiceRuntime
from tests.integration.test_inventory_flows import installed, locations_recorded, requested_from
from tests.inventory_kit import BusReader, TestCA, publish

pytestmark = pytest.mark.integration

JOBS = subjects.AGENT_JOBS_WILDCARD


async def test_a_completed_offboarding_ignores_later_certificates_on_its_devices(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader, ca = BusReader(nats_client), TestCA()
    await publish(nats_client, UserOnboarded(user="ivy", email="ivy@example.com",
                                             devices=["shared-1"]))  # fmt: skip
    (job,) = await reader.take(JOBS, 1)
    issued = ca.issue(requested_from(job)[0])
    await publish(nats_client, issued)
    assert len(await reader.take(JOBS, 1)) == 1
    await publish(nats_client, installed(issued))
    await locations_recorded(nats_client, [issued])

    await publish(nats_client, UserOffboarded(user="ivy"))
    await publish(
        nats_client,
        CertRevoked(cert_id=issued.cert_id, serial=issued.serial, issuer_ca=ca.name,
                    reason=RevocationReason.CESSATION_OF_OPERATION, comment="ivy left",
                    revoked_at=utcnow(), owner="ivy"),
    )  # fmt: skip
    assert len(await reader.take(JOBS, 1)) == 1
    await publish(
        nats_client, CertRemoved(cert_id=issued.cert_id, serial=issued.serial, target=issued.target)
    )
    (done,) = await reader.take(subjects.USER_OFFBOARDING_COMPLETED, 1)
    assert (done["found"], done["revoked"], done["removed"]) == (1, 1, 1)

    await publish(nats_client, UserOnboarded(user="jim", email="jim@example.com",
                                             devices=["shared-1"]))  # fmt: skip
    (jims,) = await reader.take(JOBS, 1)
    assert jims["owner"] == "jim"
    later = ca.issue(requested_from(jims)[0])
    await publish(nats_client, later)
    assert len(await reader.take(JOBS, 1)) == 1
    await publish(nats_client, installed(later))
    await locations_recorded(nats_client, [later])

    reply = await nats_client.request(
        subjects.rpc("inventory", "offboarding.get"),
        json.dumps({"user": "ivy"}).encode(),
        timeout=5,
    )
    progress = json.loads(reply.data)["result"]
    assert progress["status"] == "completed"
    assert (progress["found"], progress["revoked"], progress["removed"]) == (1, 1, 1)
    assert progress["pending"] == {"not_revoked": [], "still_installed": [], "requests_waiting": []}
    assert progress["cert_ids"] == [issued.cert_id]
