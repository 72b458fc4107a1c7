"""Two users onboarded, one after the other, onto the same device share its store: the second
onboarding must find the store the first one recorded (it used to insert it again and fail on
the unique constraint, retrying until the event was dead-lettered)."""

from __future__ import annotations

from typing import Any

import pytest

from shared import subjects
from shared.events import UserOnboarded
from shared.runtime import ServiceRuntime
from tests.inventory_kit import BusReader, publish

pytestmark = pytest.mark.integration


async def test_a_second_user_on_the_same_device_is_provisioned(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader = BusReader(nats_client)
    await publish(nats_client, UserOnboarded(user="alice", email="alice@example.com",
                                             devices=["shared-pc"]))  # fmt: skip
    first = await reader.take(subjects.AGENT_JOBS_WILDCARD, 1)
    assert first[0]["owner"] == "alice"

    await publish(nats_client, UserOnboarded(user="bob", email="bob@example.com",
                                             devices=["shared-pc"]))  # fmt: skip
    second = await reader.take(subjects.AGENT_JOBS_WILDCARD, 1)
    assert second[0]["owner"] == "bob"
    assert second[0]["target"]["store_path"] == first[0]["target"]["store_path"]
