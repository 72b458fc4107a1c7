"""The bus mechanics every service relies on, against a real nats-server."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlmodel import Field, SQLModel, select

from shared import subjects
from shared.db import Database
from shared.events import CertRejected, CertRequested
from shared.runtime import ServiceRuntime
from shared.settings import CommonSettings

pytestmark = pytest.mark.integration


class ProbeRecord(SQLModel, table=True):
    __tablename__ = "probe_record"
    request_id: str = Field(primary_key=True)


async def _collect(nc, subject: str, n: int, timeout: float = 10.0) -> list[dict]:
    js = nc.jetstream()
    sub = await js.pull_subscribe(subject, durable=None, stream=subjects.stream_for(subject))
    out: list[dict] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(out) < n and asyncio.get_running_loop().time() < deadline:
        try:
            msgs = await sub.fetch(n - len(out), timeout=0.5)
        except TimeoutError:
            continue
        for m in msgs:
            out.append(json.loads(m.data))
            await m.ack()
    return out


def _runtime(nats_url: str, db_url: str, handler_factory) -> ServiceRuntime:
    settings = CommonSettings(nats_url=nats_url, max_deliver=3)
    rt = ServiceRuntime("probe", settings, db=Database(db_url, schema="probe"), tables=[ProbeRecord.__table__])
    rt.consume(subjects.CERT_REQUESTED, handler_factory(rt), batch_size=50)
    return rt


def _recording_handler(rt: ServiceRuntime):
    async def handle(events: list[CertRequested]) -> None:
        async with rt.unit_of_work() as uow:
            for ev in events:
                if await uow.session.get(ProbeRecord, ev.request_id):
                    continue
                uow.session.add(ProbeRecord(request_id=ev.request_id))
                uow.emit(ev.caused(CertRejected, request_id=ev.request_id, code="probe", message="seen"))

    return handle


async def test_every_event_is_handled_once_and_its_outbox_event_published(
    nats_url: str, nats_client, database_url: str
) -> None:
    rt = _runtime(nats_url, database_url, _recording_handler)
    await rt.app.start()
    try:
        js = nats_client.jetstream()
        events = [CertRequested(request_id=f"r{i}", template="t") for i in range(200)]
        for ev in events:
            await js.publish(ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": ev.event_id})
        # The same events again: the duplicate window drops them.
        for ev in events[:50]:
            await js.publish(ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": ev.event_id})
        rejected = await _collect(nats_client, subjects.CERT_REJECTED, 200)
        assert sorted(r["request_id"] for r in rejected) == sorted(e.request_id for e in events)
        assert {r["correlation_id"] for r in rejected} == {e.correlation_id for e in events}
    finally:
        await rt.app.stop()
    async with rt.db.session() if rt.db else None as s:  # type: ignore[union-attr]
        rows = (await s.exec(select(ProbeRecord))).all()
    assert len(rows) == 200


async def test_a_failing_message_is_dead_lettered_after_max_deliver(nats_url: str, nats_client, tmp_path) -> None:
    def failing(rt):
        async def handle(events):
            if any(e.request_id == "poison" for e in events):
                raise RuntimeError("boom")

        return handle

    rt = _runtime(nats_url, f"sqlite+aiosqlite:///{tmp_path/'p.db'}", failing)
    await rt.app.start()
    try:
        js = nats_client.jetstream()
        for rid in ("ok1", "poison", "ok2"):
            ev = CertRequested(request_id=rid, template="t")
            await js.publish(ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": ev.event_id})
        dead = await _collect(nats_client, subjects.dead_letter(subjects.CERT_REQUESTED), 1, timeout=20)
        assert [d["request_id"] for d in dead] == ["poison"]
    finally:
        await rt.app.stop()


async def test_invalid_events_are_not_retried(nats_url: str, nats_client, tmp_path) -> None:
    seen: list[str] = []

    async def on_invalid(data: bytes, subject: str, reason: str) -> None:
        seen.append(reason)

    settings = CommonSettings(nats_url=nats_url, max_deliver=3)
    rt = ServiceRuntime("probe", settings, db=Database(f"sqlite+aiosqlite:///{tmp_path/'p.db'}"), tables=[])

    async def handle(events):
        pass

    rt.consume(subjects.CERT_REQUESTED, handle, on_invalid=on_invalid)
    await rt.app.start()
    try:
        await nats_client.jetstream().publish(subjects.CERT_REQUESTED, b'{"template": 5}')
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        assert len(seen) == 1 and "request_id" in seen[0]
    finally:
        await rt.app.stop()


async def test_an_invalid_event_whose_handler_fails_is_dead_lettered_not_lost(
    nats_url: str, nats_client, tmp_path
) -> None:
    async def broken_on_invalid(data: bytes, subject: str, reason: str) -> None:
        raise RuntimeError("database is down")

    settings = CommonSettings(nats_url=nats_url, max_deliver=3)
    rt = ServiceRuntime("probe", settings, db=Database(f"sqlite+aiosqlite:///{tmp_path/'p.db'}"), tables=[])

    async def handle(events):
        pass

    rt.consume(subjects.CERT_REQUESTED, handle, on_invalid=broken_on_invalid)
    await rt.app.start()
    try:
        await nats_client.jetstream().publish(subjects.CERT_REQUESTED, b'{"template": 5}')
        dead = await _collect(nats_client, subjects.dead_letter(subjects.CERT_REQUESTED), 1, timeout=20)
        assert dead == [{"template": 5}]
    finally:
        await rt.app.stop()
