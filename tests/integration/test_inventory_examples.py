"""The example scripts in infra/examples, run as a user would, against a live stack."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from services.agent.app import build as build_agent
from services.agent.settings import AgentSettings
from services.gateway.app import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.inventory.app import build as build_inventory
from services.inventory.settings import InventorySettings
from shared import subjects
from shared.events import UserOnboarded
from tests.integration.test_agent_onboarding_flow import stand_in_issuer
from tests.inventory_kit import BusReader, TestCA, cert_and_key_match, publish

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "infra" / "examples"
MACHINES = ("ivy-laptop", "ivy-desktop", "jon-pc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def stack(nats_url: str, nats_client: Any, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    inventory = build_inventory(
        InventorySettings(
            nats_url=nats_url, inventory_database_url=f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}"
        )
    )
    agents = [build_agent(AgentSettings(nats_url=nats_url, machine=m, root=tmp_path / m))
              for m in MACHINES]  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        build_gateway(GatewaySettings(nats_url=nats_url, rpc_timeout=10.0)),
        host="127.0.0.1", port=port, log_level="warning"))  # fmt: skip
    revocations: list[dict[str, Any]] = []

    async def revoke_bulk(msg: Any) -> None:
        request = json.loads(msg.data)
        revocations.append(request)
        counts = {"would_revoke" if request.get("dry_run") else "revoked": len(request["cert_ids"])}
        await msg.respond(
            json.dumps(
                {
                    "ok": True,
                    "result": {
                        "dry_run": request.get("dry_run", False),
                        "counts": counts,
                        "items": [{"cert_id": c, "status": "revoked"} for c in request["cert_ids"]],
                    },
                }
            ).encode()
        )

    await nats_client.subscribe(subjects.rpc("revocation", "revoke.bulk"), cb=revoke_bulk)
    await inventory.app.start()
    for a in agents:
        await a.app.start()
    issuer = asyncio.create_task(stand_in_issuer(nats_client, TestCA()))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "revocations": revocations, "root": tmp_path}
    server.should_exit = True
    await serving
    issuer.cancel()
    for a in agents:
        await a.app.stop()
    await inventory.app.stop()


async def run(stack: dict[str, Any], script: str, *args: str) -> str:
    env = {
        **os.environ,
        "CERTBUS_URL": stack["url"],
        "PYTHONPATH": str(REPO),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    runner = [sys.executable] if script.endswith(".py") else ["sh"]
    proc = await asyncio.create_subprocess_exec(
        *runner, str(EXAMPLES / script), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_the_scripts_issue_to_every_users_machines_then_find_and_revoke_it_all(
    stack: dict[str, Any], nats_client: Any, tmp_path: Path
) -> None:
    reader = BusReader(nats_client)
    await publish(nats_client,
                  UserOnboarded(user="ivy", email="ivy@example.com",
                                devices=["ivy-laptop", "ivy-desktop"]),
                  UserOnboarded(user="jon", devices=["jon-pc"]))  # fmt: skip
    assert len(await reader.take(subjects.CERT_INSTALLED, 3)) == 3
    users = tmp_path / "users.txt"
    users.write_text("ivy\njon\nnobody\n")

    args = ["--users", str(users), "--template", "source-control", "--store", "certs/scm",
            "--alias", "scm", "--wait", "--timeout", "60"]  # fmt: skip
    first = await run(stack, "issue_to_users_machines.py", *args)
    for machine in MACHINES:
        store = tmp_path / machine / "certs" / "scm"
        assert cert_and_key_match(store / "scm.crt", store / "scm.key"), machine
        assert f"installed: {'jon' if machine == 'jon-pc' else 'ivy'} on {machine}" in first
    again = await run(stack, "issue_to_users_machines.py", *args[:-3])
    assert sorted(line.split("request ")[1] for line in again.splitlines()) == sorted(
        line.split("request ")[1] for line in first.splitlines() if "request " in line
    )
    assert len(await reader.take(subjects.CERT_REQUESTED, 6)) == 6
    assert await reader.none_more(subjects.CERT_REQUESTED) == []  # the re-run issued nothing

    listing = await run(
        stack,
        "revoke_users_certificates.py",
        "--users",
        str(users),
        "--reason",
        "5",
        "--comment",
        "left the division",
    )
    (bulk,) = stack["revocations"]
    assert len(bulk["cert_ids"]) == 6  # a policy certificate and a script one per machine
    assert (bulk["reason"], bulk["comment"]) == ("5", "left the division")
    assert "revoked: {'revoked': 6}" in listing


async def test_the_shell_scripts_do_the_same_with_the_cli(
    stack: dict[str, Any], nats_client: Any, tmp_path: Path
) -> None:
    reader = BusReader(nats_client)
    await publish(
        nats_client, UserOnboarded(user="jon", email="jon@example.com", devices=["jon-pc"])
    )
    assert len(await reader.take(subjects.CERT_INSTALLED, 1)) == 1
    users = tmp_path / "users.txt"
    users.write_text("jon\n")

    await run(
        stack, "issue_to_users_machines.sh", str(users), "source-control", "java/scm.jks", "jks"
    )
    (installed,) = await reader.take(subjects.CERT_INSTALLED, 1)
    assert installed["target"]["store_type"] == "jks"
    assert (tmp_path / "jon-pc" / "java" / "scm.jks").is_file()

    listing = await run(stack, "revoke_users_certificates.sh", str(users), "left", "5", "--dry-run")
    assert len([line for line in listing.splitlines() if "CN=jon" in line]) == 2
    (bulk,) = stack["revocations"]
    assert bulk["dry_run"] is True and len(bulk["cert_ids"]) == 2
