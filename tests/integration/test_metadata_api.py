"""Metadata and the delivery log through the Web API, the SDK and the CLI.

A real nats-server, the metadata and notifier runtimes in a thread of their own, and the
gateway under uvicorn on a free port.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import nats
import pytest
import uvicorn
from typer.testing import CliRunner

from services.cli.main import app as cli
from services.cli.sdk import Certbus, CertbusError
from services.gateway.app import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.metadata.app import build as build_metadata
from services.metadata.settings import MetadataSettings
from services.notifier.app import build as build_notifier
from services.notifier.settings import NotifierSettings
from shared.bus import ensure_streams
from shared.testing.issued import issued_event
from shared.testing.webhooks import WebhookSink

pytestmark = pytest.mark.integration


class Background:
    """Service runtimes running on an event loop in a thread of their own."""

    def __init__(self, *runtimes) -> None:
        self.runtimes = runtimes
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> Background:
        self.thread.start()
        for rt in self.runtimes:
            self.run(rt.app.start())
        return self

    def __exit__(self, *exc) -> None:
        for rt in self.runtimes:
            self.run(rt.app.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _publish(url: str, *events) -> None:
    await ensure_streams(url)
    nc = await nats.connect(url)
    for ev in events:
        await nc.jetstream().publish(
            ev.subject_name(), ev.model_dump_json().encode(), headers={"Nats-Msg-Id": ev.event_id}
        )
    await nc.close()


@pytest.fixture
def sink():
    server = WebhookSink().start()
    yield server
    server.stop()


@pytest.fixture
def gateway_url(nats_url: str, tmp_path: Path, sink: WebhookSink, monkeypatch):
    metadata = build_metadata(
        MetadataSettings(
            nats_url=nats_url, metadata_database_url=f"sqlite:///{tmp_path / 'metadata.db'}"
        )
    )
    notifier = build_notifier(
        NotifierSettings(
            nats_url=nats_url,
            notifier_database_url=f"sqlite:///{tmp_path / 'notifier.db'}",
            notifier_webhook_urls=sink.url,
        )
    )
    with Background(metadata, notifier):
        port = _free_port()
        app = build_gateway(GatewaySettings(nats_url=nats_url, rpc_timeout=10.0))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("CERTBUS_URL", url)
        yield url
        server.should_exit = True
        thread.join(10)


def _wait_for(fn, attempts: int = 100):
    for _ in range(attempts):
        try:
            return fn()
        except (CertbusError, AssertionError):
            time.sleep(0.1)
    return fn()


def test_metadata_is_read_changed_and_compared_through_the_sdk(
    gateway_url: str, nats_url: str
) -> None:
    issued = issued_event("api.example", owner="gina", metadata={"site": "paris"})
    asyncio.run(_publish(nats_url, issued))
    with Certbus(gateway_url) as cb:
        fields = _wait_for(lambda: cb.metadata.get(issued.cert_id))
        assert fields == {"isEnabled": "true", "site": "paris"}
        cb.metadata.define("costCenter", "int", description="who pays")
        result = cb.metadata.set(issued.cert_id, costCenter=42, isEnabled=False)
        assert result["fields"] == {"costCenter": "42", "isEnabled": "false", "site": "paris"}
        assert cb.metadata.compare({"isEnabled": True}, thumbprint=issued.thumbprint_sha256)[
            "differences"
        ] == {"isEnabled": {"expected": "true", "actual": "false"}}
        assert [h["field"] for h in cb.metadata.history(issued.serial)][-2:] == [
            "costCenter",
            "isEnabled",
        ]
        assert "costCenter" in {f["name"] for f in cb.metadata.fields()}
        with pytest.raises(CertbusError) as bad:
            cb.metadata.set(issued.cert_id, costCenter="lots")
        assert (bad.value.status, bad.value.code) == (422, "invalid_value")
        with pytest.raises(CertbusError) as missing:
            cb.metadata.get("no-such-cert")
        assert (missing.value.status, missing.value.code) == (404, "not_found")

        deliveries = _wait_for(lambda: _one_sent(cb, issued.event_id))
        assert deliveries["items"][0]["subject"] == "cert.issued"


def _one_sent(cb: Certbus, event_id: str) -> dict:
    page = cb.notifications.deliveries(event_id=event_id, status="sent")
    assert page["total"] == 1
    return page


def test_the_cli_sets_and_compares_metadata_with_exit_codes(
    gateway_url: str, nats_url: str
) -> None:
    issued = issued_event("cli.example", owner="hank")
    asyncio.run(_publish(nats_url, issued))
    runner = CliRunner()
    shown = _wait_for(
        lambda: _ok(runner.invoke(cli, ["metadata", "show", issued.cert_id, "--json"]))
    )
    assert json.loads(shown.stdout) == {"isEnabled": "true"}
    changed = runner.invoke(cli, ["metadata", "set", issued.cert_id, "isEnabled=false", "--json"])
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.stdout)["changed_fields"] == ["isEnabled"]
    differs = runner.invoke(
        cli, ["metadata", "compare", "--cert", issued.cert_id, "isEnabled=true"]
    )
    assert differs.exit_code == 1 and "differs" in differs.stdout
    matches = runner.invoke(
        cli, ["metadata", "compare", "--thumbprint", issued.thumbprint_sha1, "isEnabled=false"]
    )
    assert matches.exit_code == 0, matches.output
    unknown = runner.invoke(cli, ["metadata", "show", "nope"])
    assert unknown.exit_code == 2 and "not_found" in unknown.stderr
    delivered = _wait_for(lambda: _sent_via_cli(runner, issued.event_id))
    assert delivered["items"][0]["status"] == "sent"
    subscribed = runner.invoke(cli, ["notifications", "subscriptions", "--json"])
    assert [s["subjects"] for s in json.loads(subscribed.stdout)] == [
        ["cert.issued", "cert.revoked", "user.offboarding.completed"]
    ]


def _sent_via_cli(runner: CliRunner, event_id: str) -> dict:
    result = _ok(
        runner.invoke(
            cli, ["notifications", "deliveries", "--event", event_id, "--status", "sent", "--json"]
        )
    )
    page = json.loads(result.stdout)
    assert page["total"] == 1
    return page


def _ok(result):
    assert result.exit_code == 0, result.output
    return result
