"""A user who leaves, is hired again and leaves again has a second offboarding: it opens
again and completes (announced once more); a repeated announcement of a leave does not."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared import subjects
from shared.events import UserOffboarded, UserOnboarded
from shared.runtime import ServiceRuntime
from tests.inventory_kit import BusReader, eventually, publish

pytestmark = pytest.mark.integration


async def test_leaving_again_after_a_rehire_is_a_new_offboarding(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader = BusReader(nats_client)
    done = subjects.USER_OFFBOARDING_COMPLETED
    await publish(nats_client, UserOnboarded(user="hank", email="hank@example.com"))
    first = UserOffboarded(user="hank", comment="left")
    await publish(nats_client, first)
    (completed,) = await reader.take(done, 1)
    assert completed["correlation_id"] == first.correlation_id

    await publish(nats_client, first.model_copy(update={"event_id": "the-same-leave-again"}))
    assert await reader.none_more(done, wait=1.0) == []

    await publish(nats_client, UserOnboarded(user="hank", email="hank@example.com"))

    async def active() -> bool:
        reply = await nats_client.request(
            subjects.rpc("inventory", "users.get"), json.dumps({"user": "hank"}).encode(), timeout=5
        )
        return json.loads(reply.data)["result"]["status"] == "active"

    assert await eventually(active)
    second = UserOffboarded(user="hank", comment="left again")
    await publish(nats_client, second)
    (again,) = await reader.take(done, 1)
    assert again["correlation_id"] == second.correlation_id
    assert again["event_id"] != completed["event_id"]
