"""Kill -9 the revocation service in the middle of a storm of offboardings, start it again, and
every affected certificate is revoked exactly once, OCSP says so and the CRL lists them all.

The issuer runs as its own process too: it certifies the OCSP signer and signs the CRLs. The
certificates are announced with ``cert.issued`` for its CA by the test (only serials matter).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from services.revocation.ocsp import issuer_hashes
from shared import subjects
from shared.events import CertIssued, UserOffboarded
from shared.pki import load_certificate
from shared.testing.revocation_kit import (
    LabCa,
    cert_issued,
    drained,
    messages_on,
    publish,
    wait_until,
)

pytestmark = pytest.mark.integration

USERS = 200
CERTS_PER_USER = 3
CA_NAME = "issuing-ec"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_issuer(nats_url: str, var_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CERTBUS_NATS_URL": nats_url,
        "CERTBUS_VAR_DIR": str(var_dir),
        "CERTBUS_CA_PASSPHRASE": secrets.token_urlsafe(16),
        "CERTBUS_ISSUER_CAS": f'["{CA_NAME}"]',
        "CERTBUS_LOG_LEVEL": "WARNING",
    }
    env.pop("CERTBUS_DATABASE_URL", None)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.issuer"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parents[2],
        )


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


def renumbered(ev: CertIssued) -> CertIssued:
    ev.serial = format(x509.random_serial_number(), "x")
    ev.thumbprint_sha256 = secrets.token_hex(32)
    ev.thumbprint_sha1 = secrets.token_hex(20)
    return ev


async def issuer_certificate(nc) -> x509.Certificate:  # type: ignore[no-untyped-def]
    """The issuer's CA, once it answers ``cas.list``."""
    found: list[x509.Certificate] = []

    async def listed() -> bool:
        try:
            reply = await nc.request(subjects.rpc("issuer", "cas.list"), b"{}", timeout=2)
        except Exception:  # noqa: BLE001 - not up yet
            return False
        items = json.loads(reply.data).get("result", {}).get("items", [])
        found.extend(load_certificate(c["certificate_pem"]) for c in items if c["name"] == CA_NAME)
        return bool(found)

    await wait_until(listed, within=60, what="the issuer")
    return found[0]


async def publish_all(js, events) -> None:  # type: ignore[no-untyped-def]
    for start in range(0, len(events), 200):
        await asyncio.gather(*(publish(js, ev) for ev in events[start : start + 200]))


async def ocsp_status(url: str, issuer: x509.Certificate, serial: str, http: httpx.AsyncClient):  # type: ignore[no-untyped-def]
    der = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(*issuer_hashes(issuer, "sha256"), int(serial, 16), hashes.SHA256())
        .build()
    )
    answer = await http.post(f"{url}/ocsp", content=der.public_bytes(serialization.Encoding.DER))
    response = ocsp.load_der_ocsp_response(answer.content)
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return response.response_status
    return response.certificate_status


async def test_offboardings_survive_a_kill_minus_nine_and_revoke_each_certificate_once(
    nats_url: str, nats_client, tmp_path: Path
) -> None:
    js = nats_client.jetstream()
    shape = LabCa("shape").issue("any")
    issued: list[CertIssued] = [
        renumbered(cert_issued(CA_NAME, shape, owner=f"user{u}"))
        for u in range(USERS) for _ in range(CERTS_PER_USER)
    ]  # fmt: skip
    bystander = renumbered(cert_issued(CA_NAME, shape, owner="stays"))
    port, var_dir, log = free_port(), tmp_path / "var", tmp_path / "revocation.log"

    issuer_process = start_issuer(nats_url, tmp_path / "issuer", tmp_path / "issuer.log")
    service = start_service(nats_url, var_dir, port, log)
    try:
        issuer = await issuer_certificate(nats_client)
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
                    return await ocsp_status(url, issuer, bystander.serial, http) == (
                        ocsp.OCSPCertStatus.GOOD
                    )
                except httpx.HTTPError:
                    return False

            await wait_until(answering, within=60, what="OCSP after the restart")
            statuses = await asyncio.gather(
                *(ocsp_status(url, issuer, ev.serial, http) for ev in issued)
            )
            assert set(statuses) == {ocsp.OCSPCertStatus.REVOKED}

            async def crl_lists_all() -> bool:
                response = await http.get(f"{url}/crl/{CA_NAME}.crl")
                if response.status_code != 200:
                    return False
                crl = x509.load_der_x509_crl(response.content)
                listed = {format(r.serial_number, "x") for r in crl}
                return listed >= set(counts) and crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]

            await wait_until(crl_lists_all, within=60, what="the CRL listing every revocation")
    finally:
        for process in (service, issuer_process):
            process.send_signal(signal.SIGTERM)
        for process in (service, issuer_process):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    with sqlite3.connect(var_dir / "revocation.db") as db:
        rows = db.execute("SELECT serial, COUNT(*) FROM revocation_revocation GROUP BY serial")
        per_serial = dict(rows.fetchall())
    assert len(per_serial) == len(issued) and set(per_serial.values()) == {1}
