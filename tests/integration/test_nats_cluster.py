"""A real 3-node NATS cluster: replicated streams survive kill -9 of the stream leader.

Three processes of the bundled nats-server, routes on loopback ports, every certbus stream
with three replicas (``ensure_streams(url, replicas=3)``, as compose.yaml runs it).
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import ConsumerConfig

from shared import subjects
from shared.bus import ensure_streams
from shared.testing.servers import NatsServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

NAMES = ("n1", "n2", "n3")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, NatsServer]]:
    routes = dict(zip(NAMES, _free_ports(3), strict=True))
    route_list = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes.values())
    servers: dict[str, NatsServer] = {}
    try:
        for name in NAMES:
            config = tmp_path / f"{name}.conf"
            config.write_text(
                f"server_name: {name}\n"
                f"cluster {{\n  name: certbus-test\n  listen: 127.0.0.1:{routes[name]}\n"
                f"  routes: [{route_list}]\n}}\n"
            )
            servers[name] = NatsServer(
                store_dir=tmp_path / name,
                log_file=tmp_path / f"{name}.log",
                extra_args=["--config", str(config)],
            ).start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


async def _until(fn, within: float = 20.0):
    """Retry ``fn`` until it stops raising (the cluster needs a moment to elect leaders)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await fn()
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.25)


async def test_a_replicated_stream_survives_kill_9_of_its_leader_and_loses_nothing(cluster) -> None:
    url = ",".join(server.url for server in cluster.values())
    await _until(lambda: ensure_streams(url, replicas=3))
    nc = await nats.connect(url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream(timeout=2)
    stream = subjects.stream_for(subjects.CERT_ISSUED)
    try:
        info = await js.stream_info(stream)
        assert info.config.num_replicas == 3
        await _until(lambda: _has_replicas(js, stream))

        async def publish(i: int) -> None:
            msg_id = f"cert-{i}"
            await _until(
                lambda: js.publish(
                    subjects.CERT_ISSUED, msg_id.encode(), headers={"Nats-Msg-Id": msg_id}
                )
            )

        await js.add_consumer(stream, ConsumerConfig(durable_name="cluster-test", ack_wait=5))
        for i in range(300):
            await publish(i)
        before = await _fetch(js, stream, 150)

        leader = (await js.stream_info(stream)).cluster.leader
        victim = cluster[leader].process
        assert victim is not None
        victim.send_signal(signal.SIGKILL)
        victim.wait()

        for i in range(300, 600):
            await publish(i)
        for i in range(0, 600, 7):
            await publish(i)  # republished after the failover: the duplicate window drops them
        new_leader = (await _until(lambda: js.stream_info(stream))).cluster.leader
        after = await _until(lambda: _fetch(js, stream, 450))
        state = (await js.stream_info(stream)).state
    finally:
        await nc.close()

    assert new_leader in cluster and new_leader != leader
    assert state.messages == 600
    assert sorted(before + after, key=lambda m: int(m.split("-")[1])) == [
        f"cert-{i}" for i in range(600)
    ]


async def _has_replicas(js, stream: str) -> None:
    info = await js.stream_info(stream)
    assert info.cluster.leader and len(info.cluster.replicas or []) == 2


async def _fetch(js, stream: str, n: int) -> list[str]:
    """Fetch and ack ``n`` messages from the durable consumer."""
    sub = await js.pull_subscribe_bind("cluster-test", stream=stream)
    got: list[str] = []
    try:
        while len(got) < n:
            for m in await sub.fetch(min(100, n - len(got)), timeout=5):
                got.append(m.data.decode())
                await m.ack_sync()
    finally:
        await sub.unsubscribe()
    return got
