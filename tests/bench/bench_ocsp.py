"""OCSP under concurrent load on loopback: responses per second and p99 latency, measured with
wrk against the revocation service running as its own process.

Two loads: requests without a nonce (answered from the response cache) and requests with a
nonce (each answer is looked up and signed afresh). The baseline, measured in the same run, is
building and signing the same kind of response with ``cryptography`` in this process, no HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from shared import subjects
from shared.bus import ensure_streams
from shared.testing.revocation_kit import LabCa, certify_ocsp_signer, publish, serve_ocsp_signer_rpc
from shared.testing.servers import NatsServer
from tests.bench.common import Timer, report
from tests.bench.revocation_common import (
    fast_ocsp_statuses,
    free_port,
    lua_bodies_script,
    ocsp_request_der,
    run_wrk,
    start_revocation,
    wait_for_http,
)

CERTS = int(os.environ.get("CERTBUS_BENCH_OCSP_CERTS", "1000"))
SECONDS = int(os.environ.get("CERTBUS_BENCH_SECONDS", "10"))
CONNECTIONS = 32


def raw_signing_rate(ca: LabCa, n: int = 3000) -> float:
    """Responses built and signed per second by cryptography alone, on one core."""
    key = ec.generate_private_key(ec.SECP256R1())
    from cryptography.hazmat.primitives import serialization

    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "r")]))
           .sign(key, hashes.SHA256()))  # fmt: skip
    signer = certify_ocsp_signer(ca, csr.public_bytes(serialization.Encoding.PEM).decode())
    request = ocsp.load_der_ocsp_request(ocsp_request_der(ca.cert, 12345, b"n" * 16))
    now = datetime.now(UTC).replace(microsecond=0)
    with Timer() as t:
        for _ in range(n):
            (ocsp.OCSPResponseBuilder()
             .add_response_by_hash(request.issuer_name_hash, request.issuer_key_hash,
                                   request.serial_number, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD,
                                   now, now + timedelta(hours=1), None, None)
             .responder_id(ocsp.OCSPResponderEncoding.HASH, signer)
             .certificates([signer])
             .add_extension(x509.OCSPNonce(b"n" * 16), critical=False)
             .sign(key, hashes.SHA256())
             .public_bytes(serialization.Encoding.DER))  # fmt: skip
    return n / t.seconds


async def _both_answers(port: int, bodies: list[bytes]) -> bool:
    answers = await fast_ocsp_statuses("127.0.0.1", port, bodies, connections=1)
    return set(answers) == {ocsp.OCSPCertStatus.REVOKED, ocsp.OCSPCertStatus.GOOD}


async def settle(check, within: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("the responder did not settle")
        await asyncio.sleep(0.5)


async def run() -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="certbus-bench-ocsp-"))
    server = NatsServer(store_dir=tmp / "jetstream").start()
    await ensure_streams(server.url)
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    ca = LabCa("bench")
    await serve_ocsp_signer_rpc(nc, {"bench": ca})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = start_revocation(server.url, tmp / "var", port)
    try:
        await wait_for_http(url)
        issued = [ca.issued_event(f"host{i}", owner=f"user{i % 100}") for i in range(CERTS)]
        await publish(js, ca.created())
        for start in range(0, len(issued), 500):
            await asyncio.gather(*(publish(js, ev) for ev in issued[start : start + 500]))
        revoked = [ev.cert_id for ev in issued[::2]]
        serials = [int(ev.serial, 16) for ev in issued]
        plain = [ocsp_request_der(ca.cert, s) for s in serials]
        while True:
            try:
                reply = await nc.request(subjects.rpc("revocation", "revoke.bulk"), json.dumps(
                    {"cert_ids": revoked, "reason": "keyCompromise", "comment": "bench"}).encode(),
                    timeout=30)  # fmt: skip
                counts = json.loads(reply.data)["result"]["counts"]
                if counts.get("failed", 0) == 0:
                    break
            except (TimeoutError, KeyError):
                pass
            await asyncio.sleep(0.5)
        await settle(lambda: _both_answers(port, plain[:2]))
        answers = await fast_ocsp_statuses("127.0.0.1", port, plain)
        assert answers.count(ocsp.OCSPCertStatus.REVOKED) == len(revoked), "wrong answers"

        with_nonce = [ocsp_request_der(ca.cert, s, secrets.token_bytes(16)) for s in serials]
        cached = run_wrk(url, lua_bodies_script(tmp / "plain.lua", plain), SECONDS, CONNECTIONS)
        signed = run_wrk(
            url, lua_bodies_script(tmp / "nonce.lua", with_nonce), SECONDS, CONNECTIONS
        )
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(30)
        await nc.close()
        server.stop()
    raw = raw_signing_rate(ca)
    return {
        "certificates": CERTS,
        "revoked": len(revoked),
        "wrk_connections": CONNECTIONS,
        "wrk_seconds": SECONDS,
        "cached_requests_per_second": cached["requests_per_second"],
        "cached_p50_ms": cached["p50_ms"],
        "cached_p99_ms": cached["p99_ms"],
        "nonce_requests_per_second": signed["requests_per_second"],
        "nonce_p50_ms": signed["p50_ms"],
        "nonce_p99_ms": signed["p99_ms"],
        "non_2xx": cached["non_2xx"] + signed["non_2xx"],
        "baseline_raw_sign_per_second_one_core": raw,
        "ratio_nonce_http_to_raw_sign": signed["requests_per_second"] / raw,
        "ratio_cached_http_to_raw_sign": cached["requests_per_second"] / raw,
        "load": os.getloadavg()[0],
        "measured_at": time.strftime("%H:%M:%S"),
    }


def main() -> dict[str, object]:
    return report("ocsp", asyncio.run(run()))


if __name__ == "__main__":
    main()
