"""The metadata service against a real nats-server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from services.metadata.app import build
from services.metadata.settings import MetadataSettings
from shared import subjects
from shared.bus import RpcError, make_broker, rpc_call
from shared.events import Event, OffboardingMode, UserOffboarded
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


async def _publish(nc, event: Event, msg_id: str | None = None) -> None:
    await nc.jetstream().publish(
        event.subject_name(),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id or event.event_id},
    )


async def _eventually(check: Callable[[], Awaitable[Any]], attempts: int = 100) -> Any:
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return await check()
        except (RpcError, AssertionError) as exc:
            last = exc
            await asyncio.sleep(0.1)
    raise AssertionError(f"never became true: {last}")


async def _changes(nc, n: int, quiet: float = 1.0) -> list[dict]:
    """Every cert.metadata.changed event in the stream, after waiting for at least ``n``."""
    sub = await nc.jetstream().pull_subscribe(
        subjects.CERT_METADATA_CHANGED,
        durable=None,
        stream=subjects.stream_for(subjects.CERT_METADATA_CHANGED),
    )
    out: list[dict] = []
    for _ in range(100):
        try:
            msgs = await sub.fetch(100, timeout=quiet if len(out) >= n else 0.2)
        except TimeoutError:
            if len(out) >= n:
                break
            continue
        out.extend(json.loads(m.data) for m in msgs)
    await sub.unsubscribe()
    return out


async def test_enrollment_metadata_is_kept_and_changes_are_announced(service, nats_client) -> None:
    issued = issued_event(owner="alice", metadata={"costCenter": "42", "isEnabled": "true"})
    await _publish(nats_client, issued)
    await _publish(nats_client, issued, msg_id="redelivered-" + issued.event_id)

    got = await _eventually(lambda: service("get", {"cert_id": issued.cert_id}))
    assert got == {"cert_id": issued.cert_id, "fields": {"costCenter": "42", "isEnabled": "true"}}

    result = await service(
        "set",
        {
            "cert_id": issued.cert_id,
            "field": "costCenter",
            "value": "77",
            "actor": "bob",
            "correlation_id": "call-1",
        },
    )
    assert result["changed"] and result["fields"]["costCenter"] == "77"
    unchanged = await service(
        "set", {"cert_id": issued.cert_id, "field": "costCenter", "value": "77"}
    )
    assert unchanged["changed"] is False

    [change] = await _changes(nats_client, 1)
    assert (change["cert_id"], change["field"], change["old"], change["new"]) == (
        issued.cert_id,
        "costCenter",
        "42",
        "77",
    )
    assert change["actor"] == "bob" and change["correlation_id"] == "call-1"
    history = await service("history", {"cert_id": issued.cert_id})
    assert [(h["field"], h["old"], h["new"]) for h in history["items"]] == [
        ("costCenter", None, "42"),
        ("isEnabled", None, "true"),
        ("costCenter", "42", "77"),
    ]


async def test_compare_answers_by_thumbprint_like_an_access_valve(service, nats_client) -> None:
    issued = issued_event(owner="alice", metadata={"isEnabled": "true", "site": "paris"})
    await _publish(nats_client, issued)
    await _eventually(lambda: service("get", {"cert_id": issued.cert_id}))

    by_sha1 = await service(
        "compare", {"thumbprint": issued.thumbprint_sha1.upper(), "expected": {"isEnabled": True}}
    )
    by_id = await service(
        "compare", {"cert_id": issued.cert_id, "expected": {"isEnabled": "true", "site": "lyon"}}
    )
    assert by_sha1 == {"cert_id": issued.cert_id, "match": True, "differences": {}}
    assert by_id["match"] is False
    assert by_id["differences"] == {"site": {"expected": "lyon", "actual": "paris"}}
    with pytest.raises(RpcError) as unknown:
        await service("compare", {"thumbprint": "00" * 32, "expected": {}})
    assert (unknown.value.code, unknown.value.status) == ("not_found", 404)
    with pytest.raises(RpcError) as invalid:
        await service("compare", {"expected": {}})
    assert invalid.value.status == 422


async def test_offboarding_in_disable_mode_disables_every_certificate_of_the_user_once(
    service, nats_client
) -> None:
    mine = [issued_event(owner="carol", metadata={"isEnabled": "true"}) for _ in range(3)]
    other = issued_event(owner="dave", metadata={"isEnabled": "true"})
    for ev in (*mine, other):
        await _publish(nats_client, ev)
    await _eventually(lambda: service("get", {"cert_id": other.cert_id}))
    for ev in mine:
        await _eventually(lambda ev=ev: service("get", {"cert_id": ev.cert_id}))

    offboarded = UserOffboarded(user="carol", mode=OffboardingMode.DISABLE)
    await _publish(nats_client, offboarded)
    await _publish(nats_client, offboarded, msg_id="again-" + offboarded.event_id)
    await _publish(nats_client, UserOffboarded(user="dave", mode=OffboardingMode.REVOKE))

    changes = await _changes(nats_client, 3)
    assert sorted(c["cert_id"] for c in changes) == sorted(ev.cert_id for ev in mine)
    assert {(c["field"], c["old"], c["new"]) for c in changes} == {("isEnabled", "true", "false")}
    assert {c["correlation_id"] for c in changes} == {offboarded.correlation_id}
    kept = await service("get", {"cert_id": other.cert_id})
    assert kept["fields"]["isEnabled"] == "true"

    later = issued_event(owner="carol", metadata={"isEnabled": "true"})
    await _publish(nats_client, later)

    async def disabled() -> None:
        got = await service("get", {"cert_id": later.cert_id})
        assert got["fields"]["isEnabled"] == "false"

    await _eventually(disabled)


async def test_defined_fields_are_validated_defaulted_and_compared_by_meaning(
    service, nats_client
) -> None:
    await service("fields.define", {"name": "approved", "type": "bool", "default": "no"})
    await service("fields.define", {"name": "costCenter", "type": "int", "required": True})
    listed = {f["name"]: f for f in (await service("fields.list", {}))["items"]}
    assert listed["isEnabled"] == {
        "name": "isEnabled",
        "type": "bool",
        "required": False,
        "default": "true",
        "description": listed["isEnabled"]["description"],
    }
    assert listed["approved"]["default"] == "false"

    issued = issued_event(owner="frank", metadata={"costCenter": "007", "isEnabled": "TRUE"})
    await _publish(nats_client, issued)
    got = await _eventually(lambda: service("get", {"cert_id": issued.cert_id}))
    assert got["fields"] == {"approved": "false", "costCenter": "7", "isEnabled": "true"}

    with pytest.raises(RpcError) as bad:
        await service("set", {"cert_id": issued.cert_id, "field": "costCenter", "value": "abc"})
    assert (bad.value.code, bad.value.status) == ("invalid_value", 422)
    with pytest.raises(RpcError) as cleared:
        await service("set", {"cert_id": issued.cert_id, "field": "costCenter", "value": None})
    assert "required" in cleared.value.message

    result = await service(
        "set", {"cert_id": issued.cert_id, "fields": {"approved": True, "costCenter": 8}}
    )
    assert sorted(result["changed_fields"]) == ["approved", "costCenter"]
    compare = await service(
        "compare",
        {
            "cert_id": issued.cert_id,
            "expected": {"approved": "yes", "costCenter": "08", "isEnabled": 1},
        },
    )
    assert compare["match"] is True, compare
    with pytest.raises(RpcError) as bad_default:
        await service("fields.define", {"name": "when", "type": "date", "default": "tomorrow"})
    assert bad_default.value.code == "invalid_value"
