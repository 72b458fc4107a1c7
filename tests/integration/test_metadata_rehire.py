"""A user offboarded in disable mode and later hired again gets enabled certificates again:
``user.onboarded`` after the offboarding lifts the "disable what is issued later" rule (as the
revocation service lifts its "revoke on sight" rule); the old certificates stay disabled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from services.metadata.app import build
from services.metadata.settings import MetadataSettings
from shared.bus import RpcError, make_broker, rpc_call
from shared.clock import utcnow
from shared.events import Event, OffboardingMode, UserOffboarded, UserOnboarded
from shared.testing.issued import issued_event

pytestmark = pytest.mark.integration


@pytest.fixture
async def service(nats_url: str, database_url: str) -> AsyncIterator[Any]:
    runtime = build(MetadataSettings(nats_url=nats_url, metadata_database_url=database_url))
    await runtime.app.start()
    client = make_broker(nats_url, "test-client")
    await client.start()

    async def call(op: str, payload: dict[str, Any]) -> Any:
        return await rpc_call(client, "metadata", op, payload)

    try:
        yield call
    finally:
        await client.stop()
        await runtime.app.stop()


async def _publish(nc: Any, event: Event) -> None:
    await nc.jetstream().publish(
        event.subject_name(),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": event.event_id},
    )


async def _enabled(call: Any, cert_id: str) -> str:
    for _ in range(100):
        try:
            return (await call("get", {"cert_id": cert_id}))["fields"]["isEnabled"]
        except RpcError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"{cert_id} never reached metadata")


async def test_a_rehired_user_gets_enabled_certificates_again(service, nats_client) -> None:
    first = issued_event(owner="gina", metadata={"isEnabled": "true"})
    await _publish(nats_client, first)
    assert await _enabled(service, first.cert_id) == "true"
    await _publish(nats_client, UserOffboarded(user="gina", mode=OffboardingMode.DISABLE))
    for _ in range(100):
        if await _enabled(service, first.cert_id) == "false":
            break
        await asyncio.sleep(0.1)
    assert await _enabled(service, first.cert_id) == "false"

    # A late redelivery of the original hire changes nothing; the rehire does.
    await _publish(
        nats_client,
        UserOnboarded(user="gina", occurred_at=utcnow() - timedelta(days=30)),
    )
    await asyncio.sleep(1.5)
    meanwhile = issued_event(owner="gina", metadata={"isEnabled": "true"})
    await _publish(nats_client, meanwhile)
    assert await _enabled(service, meanwhile.cert_id) == "false"

    await _publish(nats_client, UserOnboarded(user="gina", email="gina@example.com"))
    await asyncio.sleep(1.5)

    later = issued_event(owner="gina", metadata={"isEnabled": "true"})
    await _publish(nats_client, later)
    assert await _enabled(service, later.cert_id) == "true"
    assert await _enabled(service, first.cert_id) == "false"
