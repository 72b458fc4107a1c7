"""A policy rule with ``key: server``: the issuer makes the key, the agent installs the PKCS#12
it fetched over request/reply, and no private key ever appears in an event."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from services.agent.app import build as build_agent
from services.agent.settings import AgentSettings
from services.inventory.app import build as build_inventory
from services.inventory.settings import InventorySettings
from services.issuer.app import build as build_issuer
from services.issuer.testing import issuer_settings
from shared import subjects
from shared.events import UserOnboarded
from tests.e2e.harness import collect_subject
from tests.inventory_kit import (
    SERVER_KEY_POLICY,
    BusReader,
    cert_and_key_match,
    eventually,
    publish,
)

pytestmark = pytest.mark.integration


async def test_a_server_key_rule_installs_an_issuer_made_key_on_the_device(
    nats_url: str, nats_client: Any, tmp_path: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(SERVER_KEY_POLICY)
    issuer = build_issuer(issuer_settings(tmp_path / "issuer", nats_url))
    inventory = build_inventory(
        InventorySettings(
            nats_url=nats_url,
            policy_file=tmp_path / "policy.yaml",
            inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}",
        )
    )
    kiosk = build_agent(
        AgentSettings(nats_url=nats_url, machine="kiosk-7", root=tmp_path / "kiosk-7")
    )
    reader = BusReader(nats_client)
    for rt in (issuer, inventory, kiosk):
        await rt.app.start()
    try:
        await publish(
            nats_client, UserOnboarded(user="lobby", roles=["kiosk"], devices=["kiosk-7"])
        )
        (installed,) = await reader.take(subjects.CERT_INSTALLED, 1, within=30)
        store = tmp_path / "kiosk-7" / "certs" / "machine-client"
        cert_file, key_file = store / "machine-client.crt", store / "machine-client.key"
        assert cert_and_key_match(cert_file, key_file)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        assert cert.subject.rfc4514_string() == "CN=kiosk-7"
        assert format(cert.serial_number, "x") == installed["serial"]

        async def located() -> dict[str, Any] | None:
            reply = await nats_client.request(
                subjects.rpc("inventory", "certs.get"),
                json.dumps({"id": installed["cert_id"]}).encode(),
            )
            found = json.loads(reply.data).get("result")
            return found if found and found["locations"] else None

        recorded = await eventually(located, within=20)
        assert [loc["machine"] for loc in recorded["locations"]] == ["kiosk-7"]
        # No CSR went out: the key was not made on the device.
        assert await collect_subject(nats_url, subjects.CERT_REQUESTED, idle=0.3) == []
        completed = await collect_subject(nats_url, subjects.AGENT_JOB_COMPLETED, idle=0.3)
        assert [
            c["result"].get("key_generation") for c in completed if c["kind"] == "reenroll"
        ] == ["server"]
        for subject in ("agent.>", "cert.>"):
            for event in await collect_subject(nats_url, subject, idle=0.3):
                assert "PRIVATE KEY" not in json.dumps(event)
                assert "pkcs12" not in json.dumps(event).lower()
    finally:
        for rt in (kiosk, inventory, issuer):
            await rt.app.stop()
