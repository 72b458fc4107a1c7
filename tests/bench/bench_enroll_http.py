"""Synchronous CSR enrollment over HTTP: requests per second and p50/p99 at 16 clients.

The gateway and the issuer run as their own processes behind a private nats-server. The load
comes from ``wrk`` when installed (a Python client saturates before the server does), else
from an asyncio httpx client. The baseline, in the same run with the same CA key, is the raw
in-process issuance speed; the direct RPC rate (no HTTP) shows what the gateway adds.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from services.issuer.settings import REPO_ROOT
from services.issuer.testing import user_csr
from shared.bus import make_broker, rpc_call
from shared.testing.servers import NatsServer
from tests.bench.bench_issuance_bus import raw_rate, start_issuer, wait_for_ping
from tests.bench.common import percentile, report

CLIENTS = 16
SECONDS = int(os.environ.get("CERTBUS_BENCH_SECONDS", "10"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(nats_url: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "CERTBUS_NATS_URL": nats_url,
        "CERTBUS_GATEWAY_PORT": str(port),
        "CERTBUS_LOG_LEVEL": "WARNING",
        "CERTBUS_RPC_TIMEOUT": "30",
    }
    return subprocess.Popen([sys.executable, "-m", "services.gateway"], env=env, cwd=REPO_ROOT)


def wait_http(url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/templates", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the gateway did not come up")


def body(csr: str) -> str:
    return json.dumps({"template": "user-client", "csr": csr, "owner": "alice"})


def run_wrk(url: str, payload: str, tmp: Path) -> dict:
    script = tmp / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(payload)}\n"
    )
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{CLIENTS}",
            f"-d{SECONDS}s",
            "--latency",
            "-s",
            str(script),
            f"{url}/v1/enrollment/csr",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "client": "wrk",
        "rps": rps,
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "errors": int(non2xx.group(1)) if non2xx else 0,
    }


async def run_httpx(url: str, payload: str) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + SECONDS

    async def client() -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                r = await c.post(
                    "/v1/enrollment/csr",
                    content=payload,
                    headers={"content-type": "application/json"},
                )
                latencies.append((time.perf_counter() - t) * 1000)
                errors += r.status_code >= 300

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    elapsed = time.perf_counter() - start
    return {
        "client": "httpx",
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "errors": errors,
    }


async def rpc_direct(nats_url: str, csr: str, seconds: float = 5.0) -> float:
    broker = make_broker(nats_url, "bench")
    await broker.start()
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await rpc_call(
                broker,
                "issuer",
                "enroll.csr",
                {"template": "user-client", "csr": csr, "owner": "alice"},
                timeout=30,
            )
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    rate = done / (time.perf_counter() - start)
    await broker.stop()
    return rate


def main() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="certbus-bench-http-"))
    server = NatsServer(store_dir=tmp / "js").start()
    passphrase = secrets.token_urlsafe(16)
    port = free_port()
    issuer = start_issuer(tmp, server.url, passphrase, os.environ.get("CERTBUS_BENCH_DATABASE_URL"))
    gateway = start_gateway(server.url, port)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_for_ping(server.url))
        wait_http(url)
        csr = user_csr("alice")
        raw = raw_rate(
            tmp / "var" / "issuer" / "keys", passphrase, [user_csr(f"user{i}") for i in range(2000)]
        )
        direct = asyncio.run(rpc_direct(server.url, csr))
        http = (
            run_wrk(url, body(csr), tmp)
            if shutil.which("wrk")
            else asyncio.run(run_httpx(url, body(csr)))
        )
    finally:
        for proc in (gateway, issuer):
            proc.terminate()
            proc.wait(30)
        server.stop()
    return report(
        "enroll_http",
        {
            "clients": CLIENTS,
            "load_client": http["client"],
            "http_requests_per_second": http["rps"],
            "http_p50_ms": http["p50_ms"],
            "http_p99_ms": http["p99_ms"],
            "http_errors": http["errors"],
            "rpc_direct_per_second (no HTTP)": direct,
            "baseline_raw_in_process_per_second": raw,
            "ratio_http_over_raw": http["rps"] / raw,
            "ratio_http_over_rpc_direct": http["rps"] / direct,
        },
    )


if __name__ == "__main__":
    main()
