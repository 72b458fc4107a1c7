"""Producers and consumers agree, checked in memory with FastStream's TestNatsBroker.

The in-memory broker cannot show redelivery or deduplication (the integration tests do); it
shows that what one side publishes is what the other side's model reads.
"""

from __future__ import annotations

import json

import pytest
from faststream.nats import TestNatsBroker
from sqlmodel import select

from services.metadata.app import build as build_metadata
from services.metadata.settings import MetadataSettings
from services.notifier.app import SUBJECTS as NOTIFIER_SUBJECTS
from services.notifier.app import build as build_notifier
from services.notifier.settings import NotifierSettings
from shared import subjects
from shared.bus import RpcError, rpc_call
from shared.events import CATALOG, CertMetadataChanged, OffboardingMode, UserOffboarded
from shared.outbox import OutboxMessage
from shared.testing.issued import issued_event

UNREACHABLE = "nats://127.0.0.1:9"


@pytest.fixture
async def metadata(tmp_path):
    runtime = build_metadata(
        MetadataSettings(nats_url=UNREACHABLE, metadata_database_url=f"sqlite:///{tmp_path}/m.db")
    )
    await runtime.db.create_all(tables=runtime._tables)
    async with TestNatsBroker(runtime.broker) as broker:
        yield runtime, broker
    await runtime.db.dispose()


async def _outbox(runtime) -> list[dict]:
    async with runtime.db.session() as s:
        rows = (await s.exec(select(OutboxMessage).order_by(OutboxMessage.id))).all()
    return [{"subject": r.subject, **json.loads(r.payload)} for r in rows]


async def test_metadata_reads_what_the_issuer_publishes_and_answers_its_rpc_contract(
    metadata,
) -> None:
    runtime, broker = metadata
    issued = issued_event(owner="alice", metadata={"isEnabled": "true"})
    await broker.publish(issued.model_dump_json(), subjects.CERT_ISSUED, stream="CERT")

    assert await rpc_call(broker, "metadata", "get", {"cert_id": issued.cert_id}) == {
        "cert_id": issued.cert_id,
        "fields": {"isEnabled": "true"},
    }
    compare = await rpc_call(
        broker,
        "metadata",
        "compare",
        {"thumbprint": issued.thumbprint_sha256, "expected": {"isEnabled": "true"}},
    )
    assert compare == {"cert_id": issued.cert_id, "match": True, "differences": {}}
    with pytest.raises(RpcError) as missing:
        await rpc_call(broker, "metadata", "get", {"cert_id": "nope"})
    assert missing.value.status == 404
    ping = await rpc_call(broker, "metadata", subjects.RPC_PING, {})
    assert ping["service"] == "metadata"


async def test_what_metadata_emits_is_a_valid_catalog_event_caused_by_the_offboarding(
    metadata,
) -> None:
    runtime, broker = metadata
    issued = issued_event(owner="bob", metadata={"isEnabled": "true"})
    await broker.publish(issued.model_dump_json(), subjects.CERT_ISSUED, stream="CERT")
    offboarded = UserOffboarded(user="bob", mode=OffboardingMode.DISABLE, correlation_id="hr-9")
    await broker.publish(offboarded.model_dump_json(), subjects.USER_OFFBOARDED, stream="HR")

    [staged] = await _outbox(runtime)
    assert staged["subject"] == subjects.CERT_METADATA_CHANGED
    change = CATALOG[staged["subject"]].model_validate(staged)
    assert isinstance(change, CertMetadataChanged)
    assert (change.cert_id, change.field, change.old, change.new) == (
        issued.cert_id,
        "isEnabled",
        "true",
        "false",
    )
    assert change.correlation_id == "hr-9" and change.causation_id == offboarded.event_id


async def test_the_notifier_subscribes_to_every_subject_it_promises(tmp_path) -> None:
    runtime = build_notifier(
        NotifierSettings(nats_url=UNREACHABLE, notifier_database_url=f"sqlite:///{tmp_path}/n.db")
    )
    schema = json.loads(runtime.app.schema.to_specification().to_json())
    addresses = {channel.get("address") for channel in schema["channels"].values()}
    assert set(NOTIFIER_SUBJECTS) <= addresses
    assert subjects.rpc("notifier", "deliveries.list") in addresses
    for subject in NOTIFIER_SUBJECTS:
        assert subject in CATALOG
