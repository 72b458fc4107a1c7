"""An event the bus can never take does not stop the outbox: it is parked, and announced."""

from __future__ import annotations

import pytest
from sqlmodel import select

from shared.db import Database
from shared.events import CertRejected
from shared.outbox import OutboxMessage, ParkedOutboxMessage
from shared.runtime import ServiceRuntime
from shared.settings import CommonSettings
from tests.e2e.harness import collect_subject

pytestmark = pytest.mark.integration


async def test_an_event_larger_than_the_bus_allows_is_parked_and_the_others_still_go_out(
    nats_url: str, database_url: str
) -> None:
    rt = ServiceRuntime(
        "poison",
        CommonSettings(nats_url=nats_url),
        db=Database(database_url, schema="poison"),
        tables=[],
    )
    await rt.app.start()
    try:
        assert rt.relay is not None and rt.db is not None
        async with rt.unit_of_work() as uow:
            uow.emit(
                CertRejected(event_id="small-1", request_id="r1", code="c", message="m"),
                CertRejected(event_id="huge", request_id="r2", code="c", message="x" * 2_000_000),
                CertRejected(event_id="small-2", request_id="r3", code="c", message="m"),
            )
        await rt.relay.flush()
        published = await collect_subject(nats_url, "cert.rejected")
        assert sorted(e["event_id"] for e in published) == ["small-1", "small-2"]
        notices = await collect_subject(nats_url, "deadletter.cert.rejected")
        assert [(n["event_id"], n["kept_in"]) for n in notices] == [("huge", "outbox_parked")]
        async with rt.db.session() as s:
            assert (await s.exec(select(OutboxMessage))).all() == []
            parked = (await s.exec(select(ParkedOutboxMessage))).all()
        assert [(p.event_id, len(p.payload) > 2_000_000) for p in parked] == [("huge", True)]
        assert "MaxPayload" in parked[0].reason
    finally:
        await rt.app.stop()
