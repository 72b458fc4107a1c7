"""Kill -9 the revocation service in the middle of a storm of offboardings, start it again, and
every affected certificate is revoked exactly once and OCSP says so."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import load_pem_x509_certificate, ocsp

from shared import subjects
from shared.events import CertIssued, UserOffboarded
from shared.testing.revocation_kit import (
    LabCa,
    drained,
    messages_on,
    publish,
    serve_ocsp_signer_rpc,
    wait_until,
)

pytestmark = pytest.mark.integration

USERS = 300
CERTS_PER_USER = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(nats_url: str, var_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CERTBUS_NATS_URL": nats_url,
        "CERTBUS_VAR_DIR": str(var_dir),
        "CERTBUS_PUBLIC_PORT": str(port),
        "CERTBUS_CONSUMER_ACK_WAIT_SECONDS": "3",
        "CERTBUS_LOG_LEVEL": "WARNING",
    }
    env.pop("CERTBUS_DATABASE_URL", None)
    env.pop("CERTBUS_REVOCATION_DATABASE_URL", None)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.revocation"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parents[2],
        )


async def publish_all(js, events) -> None:  # type: ignore[no-untyped-def]
    for start in range(0, len(events), 200):
        await asyncio.gather(*(publish(js, ev) for ev in events[start : start + 200]))


async def ocsp_status(url: str, ca: LabCa, pem_text: str, http: httpx.AsyncClient):  # type: ignore[no-untyped-def]
    cert = load_pem_x509_certificate(pem_text.encode())
    der = ocsp.OCSPRequestBuilder().add_certificate(cert, ca.cert, hashes.SHA256()).build()
    answer = await http.post(f"{url}/ocsp", content=der.public_bytes(serialization.Encoding.DER))
    response = ocsp.load_der_ocsp_response(answer.content)
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return response.response_status
    return response.certificate_status


async def test_offboardings_survive_a_kill_minus_nine_and_revoke_each_certificate_once(
    nats_url: str, nats_client, tmp_path: Path
) -> None:
    js = nats_client.jetstream()
    ca = LabCa("corp")
    await serve_ocsp_signer_rpc(nats_client, {"corp": ca})
    issued: list[CertIssued] = [
        ca.issued_event(f"u{u}-{i}", owner=f"user{u}")
        for u in range(USERS) for i in range(CERTS_PER_USER)
    ]  # fmt: skip
    bystander = ca.issued_event("bystander", owner="stays")
    port, var_dir, log = free_port(), tmp_path / "var", tmp_path / "revocation.log"

    service = start_service(nats_url, var_dir, port, log)
    try:
        await publish(js, ca.created())
        await publish_all(js, [*issued, bystander])
        await wait_until(
            lambda: drained(js, "revocation", subjects.CERT_ISSUED),
            within=60,
            what="the projection",
        )
        await publish_all(js, [UserOffboarded(user=f"user{u}") for u in range(USERS)])

        async def some_revoked() -> bool:
            return (await js.stream_info("CERT")).state.messages > len(issued) + 1

        await wait_until(some_revoked, within=60, what="the first revocations")
        service.send_signal(signal.SIGKILL)
        service.wait(10)
        at_kill = (await js.stream_info("CERT")).state.messages - len(issued) - 1
        print(f"killed with {at_kill} of {len(issued)} cert.revoked published")

        service = start_service(nats_url, var_dir, port, log)

        async def all_revoked() -> bool:
            state = (await js.stream_info("CERT")).state
            return state.messages >= 2 * len(issued) + 1 and await drained(
                js, "revocation", subjects.USER_OFFBOARDED
            )

        await wait_until(all_revoked, within=120, what="every revocation")
        counts = Counter(m["serial"] for m in await messages_on(js, subjects.CERT_REVOKED))
        assert set(counts) == {ev.serial for ev in issued}
        assert set(counts.values()) == {1}

        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(timeout=60) as http:

            async def answering() -> bool:
                try:
                    return await ocsp_status(url, ca, bystander.certificate_pem, http) == (
                        ocsp.OCSPCertStatus.GOOD
                    )
                except httpx.HTTPError:
                    return False

            await wait_until(answering, within=60, what="OCSP after the restart")
            statuses = await asyncio.gather(
                *(ocsp_status(url, ca, ev.certificate_pem, http) for ev in issued)
            )
        assert set(statuses) == {ocsp.OCSPCertStatus.REVOKED}
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()

    with sqlite3.connect(var_dir / "revocation.db") as db:
        rows = db.execute("SELECT serial, COUNT(*) FROM revocation_revocation GROUP BY serial")
        per_serial = dict(rows.fetchall())
    assert len(per_serial) == len(issued) and set(per_serial.values()) == {1}
