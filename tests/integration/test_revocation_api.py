"""Revoking through the Web API, the SDK and the CLI: gateway and revocation on a real bus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from services.cli.main import app as cli
from services.cli.sdk import Certbus, CertbusError
from services.gateway.app import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.revocation.app import wire
from services.revocation.settings import RevocationSettings
from shared import subjects
from shared.events import CertIssued
from shared.testing.revocation_kit import LabCa, drained, messages_on, publish, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def certs(nats_client) -> list[CertIssued]:  # type: ignore[no-untyped-def]
    ca = LabCa("corp")
    return [ca.issued_event(f"host{i}.corp", owner="ops") for i in range(4)]


@pytest.fixture
async def gateway_url(
    nats_url: str, nats_client, tmp_path: Path, certs: list[CertIssued]
) -> AsyncIterator[str]:
    async def certs_list(msg) -> None:  # type: ignore[no-untyped-def]
        # Inventory answers the query; this one matches the first three certificates.
        request = json.loads(msg.data)
        items = [{"id": c.cert_id} for c in certs[:3]] if request.get("query") else []
        page = items[int(request.get("offset") or 0) :]
        await msg.respond(json.dumps({"ok": True, "result": {"items": page, "total": 3}}).encode())

    await nats_client.subscribe(subjects.rpc("inventory", "certs.list"), cb=certs_list)
    svc = wire(RevocationSettings(
        nats_url=nats_url, var_dir=tmp_path / "var", public_port=0,
        revocation_database_url=f"sqlite+aiosqlite:///{tmp_path / 'revocation.db'}",
    ))  # fmt: skip
    await svc.runtime.app.start()
    js = nats_client.jetstream()
    await publish(js, *certs)
    await wait_until(lambda: drained(js, "revocation", subjects.CERT_ISSUED), what="cert.issued")
    server = uvicorn.Server(uvicorn.Config(
        build_gateway(GatewaySettings(nats_url=nats_url)), host="127.0.0.1", port=0,
        log_level="warning",
    ))  # fmt: skip
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await wait_until(started, what="the gateway")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        await svc.runtime.app.stop()


def sdk_call(url: str, fn):  # type: ignore[no-untyped-def]
    """The SDK is synchronous; run it off the loop that serves the gateway."""

    def run():  # type: ignore[no-untyped-def]
        with Certbus(url) as cb:
            return fn(cb)

    return asyncio.to_thread(run)


async def test_revoking_twice_reports_the_first_revocation_and_emits_one_event(
    gateway_url: str, certs: list[CertIssued], nats_client
) -> None:
    target = certs[0]
    first = await sdk_call(
        gateway_url,
        lambda cb: cb.revocation.revoke(
            target.serial, reason="keyCompromise", comment="laptop stolen"
        ),
    )
    second = await sdk_call(
        gateway_url,
        lambda cb: cb.revocation.revoke(target.thumbprint_sha256, reason=4, comment="again"),
    )
    assert first["status"] == "revoked" and first["revocation"]["reason"] == "keyCompromise"
    assert second["status"] == "already_revoked"
    assert second["revocation"] == first["revocation"]
    status = await sdk_call(gateway_url, lambda cb: cb.revocation.status(target.cert_id))
    assert status["status"] == "revoked"
    js = nats_client.jetstream()
    await wait_until(lambda: _outbox_sent(js, 1), what="cert.revoked")
    [event] = await messages_on(js, subjects.CERT_REVOKED)
    assert (event["serial"], event["reason"], event["comment"]) == (
        target.serial,
        1,
        "laptop stolen",
    )


async def _outbox_sent(js, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await messages_on(js, subjects.CERT_REVOKED)) >= n


async def test_only_a_hold_can_be_released(gateway_url: str, certs: list[CertIssued]) -> None:
    held, final = certs[1], certs[2]
    await sdk_call(
        gateway_url,
        lambda cb: cb.revocation.revoke(
            held.cert_id, reason="certificateHold", comment="investigating"
        ),
    )
    await sdk_call(
        gateway_url,
        lambda cb: cb.revocation.revoke(final.cert_id, reason="superseded", comment="renewed"),
    )
    released = await sdk_call(gateway_url, lambda cb: cb.revocation.release(held.cert_id))
    assert released["status"] == "released"
    assert (await sdk_call(gateway_url, lambda cb: cb.revocation.status(held.cert_id)))[
        "status"
    ] == "good"
    with pytest.raises(CertbusError) as refused:
        await sdk_call(gateway_url, lambda cb: cb.revocation.release(final.cert_id))
    assert (refused.value.status, refused.value.code) == (409, "revocation_final")


async def test_bad_reasons_missing_comments_and_unknown_certificates_are_refused(
    gateway_url: str, certs: list[CertIssued]
) -> None:
    for call, expected in (
        (lambda cb: cb.revocation.revoke(certs[0].cert_id, reason="bored", comment="x"), 422),
        (lambda cb: cb.revocation.revoke(certs[0].cert_id, reason=1, comment=" "), 422),
        (lambda cb: cb.revocation.revoke("no-such-cert", reason=1, comment="x"), 404),
        (
            lambda cb: cb.revocation.revoke(
                certs[0].cert_id, reason=1, comment="x", effective_at="2099-01-01T00:00:00Z"
            ),
            422,
        ),
    ):
        with pytest.raises(CertbusError) as err:
            await sdk_call(gateway_url, call)
        assert err.value.status == expected


async def test_bulk_revocation_by_query_previews_then_reports_each_certificate(
    gateway_url: str, certs: list[CertIssued]
) -> None:
    await sdk_call(
        gateway_url,
        lambda cb: cb.revocation.revoke(certs[0].cert_id, reason="superseded", comment="earlier"),
    )
    preview = await sdk_call(
        gateway_url,
        lambda cb: cb.revocation.revoke_query(
            'CN -contains "host"', reason="cACompromise", comment="CA moved", dry_run=True
        ),
    )
    assert preview["dry_run"] and preview["counts"] == {"would_revoke": 2, "already_revoked": 1}
    assert (await sdk_call(gateway_url, lambda cb: cb.revocation.status(certs[1].cert_id)))[
        "status"
    ] == "good"

    done = await sdk_call(
        gateway_url,
        lambda cb: cb.revocation.revoke_many(
            [certs[1].cert_id, certs[3].serial, "no-such-cert"], reason=2, comment="CA moved"
        ),
    )
    by_id = {item["cert_id"]: item for item in done["items"]}
    assert by_id[certs[1].cert_id]["status"] == "revoked"
    assert by_id[certs[3].cert_id]["revocation"]["reason"] == "cACompromise"
    assert by_id["no-such-cert"] == {
        "cert_id": "no-such-cert",
        "status": "failed",
        "error": "not_found",
    }


async def test_the_cli_revokes_previews_and_releases(
    gateway_url: str, certs: list[CertIssued], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTBUS_URL", gateway_url)
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return asyncio.to_thread(runner.invoke, cli, list(args))

    held = await invoke(
        "certs",
        "revoke",
        certs[2].serial,
        "--reason",
        "certificateHold",
        "--comment",
        "audit",
        "--effective",
        "2026-01-02T03:04:05",
        "--json",
    )
    assert held.exit_code == 0, held.output
    assert json.loads(held.output)["revocation"]["revoked_at"] == "2026-01-02T03:04:05+00:00"

    preview = await invoke(
        "certs",
        "revoke",
        "--query",
        "CN -contains host",
        "--reason",
        "5",
        "--comment",
        "cleanup",
        "--dry-run",
        "--json",
    )
    assert preview.exit_code == 0, preview.output
    assert json.loads(preview.output)["counts"] == {"would_revoke": 2, "already_revoked": 1}

    released = await invoke("certs", "release", certs[2].serial)
    assert released.exit_code == 0 and "released" in released.output
