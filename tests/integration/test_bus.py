"""The bus mechanics every service relies on, against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from sqlmodel import Field, SQLModel, select

from shared import subjects
from shared.bus import EventPublisher, durable_consumer, make_broker
from shared.db import Database
from shared.events import CertRejected, CertRequested
from shared.runtime import ServiceRuntime
from shared.settings import CommonSettings

pytestmark = pytest.mark.integration

_REPO_ROOT = str(Path(__file__).resolve().parents[2])


class ProbeRecord(SQLModel, table=True):
    __tablename__ = "probe_record"
    request_id: str = Field(primary_key=True)


async def _collect(nc, subject: str, n: int, timeout: float = 10.0) -> list[dict]:  # noqa: ASYNC109
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
    rt = ServiceRuntime(
        "probe", settings, db=Database(db_url, schema="probe"), tables=[ProbeRecord.__table__]
    )
    rt.consume(subjects.CERT_REQUESTED, handler_factory(rt), batch_size=50)
    return rt


def _recording_handler(rt: ServiceRuntime):
    async def handle(events: list[CertRequested]) -> None:
        async with rt.unit_of_work() as uow:
            for ev in events:
                if await uow.session.get(ProbeRecord, ev.request_id):
                    continue
                uow.session.add(ProbeRecord(request_id=ev.request_id))
                uow.emit(
                    ev.caused(CertRejected, request_id=ev.request_id, code="probe", message="seen")
                )

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
            await js.publish(
                ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": ev.event_id}
            )
        # The same events again: the duplicate window drops them.
        for ev in events[:50]:
            await js.publish(
                ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": ev.event_id}
            )
        rejected = await _collect(nats_client, subjects.CERT_REJECTED, 200)
        assert sorted(r["request_id"] for r in rejected) == sorted(e.request_id for e in events)
        assert {r["correlation_id"] for r in rejected} == {e.correlation_id for e in events}
    finally:
        await rt.app.stop()
    async with rt.db.session() if rt.db else None as s:  # type: ignore[union-attr]
        rows = (await s.exec(select(ProbeRecord))).all()
    assert len(rows) == 200


async def test_a_failing_message_is_dead_lettered_after_max_deliver(
    nats_url: str, nats_client, tmp_path
) -> None:
    def failing(rt):
        async def handle(events):
            if any(e.request_id == "poison" for e in events):
                raise RuntimeError("boom")

        return handle

    rt = _runtime(nats_url, f"sqlite+aiosqlite:///{tmp_path / 'p.db'}", failing)
    await rt.app.start()
    try:
        js = nats_client.jetstream()
        for rid in ("ok1", "poison", "ok2"):
            ev = CertRequested(request_id=rid, template="t")
            await js.publish(
                ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": ev.event_id}
            )
        dead = await _collect(
            nats_client, subjects.dead_letter(subjects.CERT_REQUESTED), 1, timeout=20
        )
        assert [d["request_id"] for d in dead] == ["poison"]
    finally:
        await rt.app.stop()


async def test_invalid_events_are_not_retried(nats_url: str, nats_client, tmp_path) -> None:
    seen: list[str] = []

    async def on_invalid(data: bytes, subject: str, reason: str) -> None:
        seen.append(reason)

    settings = CommonSettings(nats_url=nats_url, max_deliver=3)
    rt = ServiceRuntime(
        "probe", settings, db=Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"), tables=[]
    )

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
    rt = ServiceRuntime(
        "probe", settings, db=Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"), tables=[]
    )

    async def handle(events):
        pass

    rt.consume(subjects.CERT_REQUESTED, handle, on_invalid=broken_on_invalid)
    await rt.app.start()
    try:
        await nats_client.jetstream().publish(subjects.CERT_REQUESTED, b'{"template": 5}')
        dead = await _collect(
            nats_client, subjects.dead_letter(subjects.CERT_REQUESTED), 1, timeout=20
        )
        assert dead == [{"template": 5}]
    finally:
        await rt.app.stop()


# A worker process whose handler a poison message kills outright (SIGKILL: no exception, no
# nak, no term, nothing the consumer code can catch); every other event is written to a file.
_KILLABLE_WORKER = """
import asyncio, os, signal, sys

from shared import subjects
from shared.bus import EventPublisher, durable_consumer, make_broker


async def main(url, handled):
    broker = make_broker(url, "probe")
    publisher = EventPublisher(broker)

    async def handle(events):
        if any(e.request_id == "poison" for e in events):
            os.kill(os.getpid(), signal.SIGKILL)
        with open(handled, "a") as f:
            f.writelines(e.request_id + "\\n" for e in events)

    durable_consumer(
        broker, service="probe", subject=subjects.CERT_REQUESTED, handler=handle,
        publisher=lambda: publisher, max_deliver=3, ack_wait=1.0, max_wait=0.2,
    )
    await broker.start()
    await asyncio.Event().wait()


asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_message_that_kills_its_worker_is_dead_lettered_not_lost(
    nats_url: str, nats_client, tmp_path: Path
) -> None:
    js = nats_client.jetstream()
    durable = subjects.durable_name("probe", subjects.CERT_REQUESTED)
    # The consumer as the previous release left it: the server itself stopped redelivering
    # after max_deliver, so a message whose last delivery crashed was dropped, unparked.
    await js.add_consumer(
        "CERT",
        ConsumerConfig(
            durable_name=durable,
            filter_subject=subjects.CERT_REQUESTED,
            ack_policy=AckPolicy.EXPLICIT,
            max_deliver=3,
            ack_wait=1.0,
            max_ack_pending=20000,
        ),
    )
    dead_letters = await js.pull_subscribe(
        subjects.dead_letter(subjects.CERT_REQUESTED), durable=None, stream="DLQ"
    )

    async def publish(request_id: str) -> None:
        ev = CertRequested(request_id=request_id, template="t")
        await js.publish(
            ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": ev.event_id}
        )

    # Poison first: it comes back ahead of its batch-mate, which must be handled all the same.
    await publish("poison")
    await publish("ok")
    handled = tmp_path / "handled.txt"
    worker_log = tmp_path / "worker.log"
    env = {**os.environ, "PYTHONPATH": _REPO_ROOT}

    def start() -> subprocess.Popen[bytes]:
        with open(worker_log, "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-c", _KILLABLE_WORKER, nats_url, str(handled)],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def handled_ids() -> list[str]:
        return handled.read_text().split() if handled.exists() else []

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 40
    dead = []
    starts = 0
    worker = None
    try:
        # A supervisor: restart the worker each time it dies, as systemd or Kubernetes would.
        while not dead and loop.time() < deadline:
            if worker is None or worker.poll() is not None:
                if starts == 6:
                    break
                worker = start()
                starts += 1
            try:
                dead = await dead_letters.fetch(1, timeout=0.5)
            except TimeoutError:
                pass
        assert dead, f"nothing dead-lettered after {starts} worker starts; see {worker_log}"
        [parked] = dead
        assert json.loads(parked.data)["request_id"] == "poison"
        assert parked.headers["certbus-consumer"] == durable
        assert parked.headers["certbus-reason"] == (
            "not acknowledged after 3 deliveries (the worker crashed or timed out handling it)"
        )
        await parked.ack()
        # The poison ran three times, once per worker; the fourth was parked without running.
        assert starts == 4 and worker.poll() is None
        # Its batch-mate was handled and not parked, and the worker goes on consuming.
        await publish("after")
        for _ in range(100):
            if "after" in handled_ids():
                break
            await asyncio.sleep(0.1)
        seen = handled_ids()
        assert "ok" in seen and "after" in seen and "poison" not in seen
        with pytest.raises(TimeoutError):
            await dead_letters.fetch(1, timeout=1.0)
        assert (await js.consumer_info("CERT", durable)).config.max_deliver == -1
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)


async def test_a_consumer_made_by_an_earlier_version_takes_the_declared_config(
    nats_url: str, nats_client
) -> None:
    js = nats_client.jetstream()
    old = subjects.durable_name("probe", subjects.CERT_REQUESTED)
    await js.add_consumer(
        "CERT",
        ConsumerConfig(
            durable_name=old,
            filter_subject=subjects.CERT_REQUESTED,
            ack_policy=AckPolicy.EXPLICIT,
            max_deliver=8,
            ack_wait=30,
            max_ack_pending=1000,
        ),
    )
    seen: list[str] = []

    async def handle(events) -> None:
        seen.extend(e.request_id for e in events)

    broker = make_broker(nats_url, "probe")
    publisher = EventPublisher(broker)
    for subject in (subjects.CERT_REQUESTED, subjects.CERT_REJECTED):
        durable_consumer(
            broker, service="probe", subject=subject, handler=handle,
            publisher=lambda: publisher, ack_wait=2.0, max_wait=0.2,
        )  # fmt: skip
    await broker.start()
    try:
        for ev in (
            CertRequested(request_id="r1", template="t"),
            CertRejected(request_id="r2", code="c", message="m"),
        ):
            await js.publish(ev.subject, ev.model_dump_json().encode())
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.1)
        assert sorted(seen) == ["r1", "r2"]
        # The old durable is updated in place (same name, same delivery state), the new one is
        # created so: the server never stops redelivering, the consumer counts.
        for durable in (old, subjects.durable_name("probe", subjects.CERT_REJECTED)):
            config = (await js.consumer_info("CERT", durable)).config
            assert (config.max_deliver, config.ack_wait, config.max_ack_pending) == (-1, 2.0, 20000)
    finally:
        await broker.stop()
