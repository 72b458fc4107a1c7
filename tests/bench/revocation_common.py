"""What the revocation benchmarks share: a nats-server, the revocation service as its own
process, OCSP requests, and a wrk run with a Lua script that rotates request bodies."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_revocation(nats_url: str, var_dir: Path, port: int, **env_extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "CERTBUS_NATS_URL": nats_url,
        "CERTBUS_VAR_DIR": str(var_dir),
        "CERTBUS_PUBLIC_PORT": str(port),
        "CERTBUS_LOG_LEVEL": "WARNING",
        **env_extra,
    }
    return subprocess.Popen([sys.executable, "-m", "services.revocation"], env=env, cwd=REPO_ROOT)


def ocsp_request_der(issuer: x509.Certificate, serial: int, nonce: bytes | None = None) -> bytes:
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    from asn1crypto import keys

    key_bits = keys.PublicKeyInfo.load(spki)["public_key"].contents[1:]
    digest = hashes.Hash(hashes.SHA1())
    digest.update(issuer.subject.public_bytes())
    name_hash = digest.finalize()
    digest = hashes.Hash(hashes.SHA1())
    digest.update(key_bits)
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, digest.finalize(), serial, hashes.SHA1()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


async def ocsp_statuses(url: str, bodies: list[bytes], concurrency: int = 64) -> list[object]:
    """Ask the responder about every request; returns each certificate status (or the
    response status when unsuccessful)."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def one(body: bytes) -> object:
            async with gate:
                answer = await http.post("/ocsp", content=body)
            response = ocsp.load_der_ocsp_response(answer.content)
            if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
                return response.response_status
            return response.certificate_status

        return list(await asyncio.gather(*(one(b) for b in bodies)))


async def fast_ocsp_statuses(
    host: str, port: int, bodies: list[bytes], connections: int = 8
) -> list[object]:
    """The same as ``ocsp_statuses`` on a few keep-alive connections speaking HTTP/1.1 by hand:
    httpx tops out near 200 requests a second here, which would measure the client."""
    results: list[object] = [None] * len(bodies)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(bodies)):
        queue.put_nowait(index)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while not queue.empty():
                index = queue.get_nowait()
                body = bodies[index]
                writer.write(
                    b"POST /ocsp HTTP/1.1\r\nHost: %s\r\nContent-Type: application/ocsp-request"
                    b"\r\nContent-Length: %d\r\n\r\n" % (host.encode(), len(body)) + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                response = ocsp.load_der_ocsp_response(await reader.readexactly(length))
                results[index] = (
                    response.certificate_status
                    if response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
                    else response.response_status
                )
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return results


async def wait_for_http(url: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        while True:
            try:
                if (await http.get("/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer")
            await asyncio.sleep(0.2)


def lua_bodies_script(path: Path, bodies: list[bytes], uri: str = "/ocsp") -> Path:
    def literal(data: bytes) -> str:
        return '"' + "".join(f"\\{b}" for b in data) + '"'

    lines = ["local bodies = {", *(f"  {literal(b)}," for b in bodies), "}"]
    lines += [
        "local i = 0",
        'local headers = {["Content-Type"] = "application/ocsp-request"}',
        "request = function()",
        "  i = i % #bodies + 1",
        f'  return wrk.format("POST", "{uri}", headers, bodies[i])',
        "end",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(
    url: str, script: Path, seconds: int = 10, connections: int = 32, threads: int = 2
) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "requests_per_second": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": errors.group(0) if errors else "",
    }  # type: ignore[dict-item]


def _ms(text: str) -> float:
    value = float(re.match(r"[\d.]+", text).group(0))  # type: ignore[union-attr]
    unit = text[len(re.match(r"[\d.]+", text).group(0)) :]  # type: ignore[union-attr]
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
