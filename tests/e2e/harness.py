"""What the end-to-end tests share: a running system, polling, and reading the streams."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography import x509

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def collect_subject(nats_url: str, subject: str, idle: float = 1.0) -> list[dict[str, Any]]:
    """Every message ever stored on ``subject`` (an ephemeral consumer from the start)."""
    import nats

    from shared.subjects import stream_for

    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(subject, stream=stream_for(subject))
        out: list[dict[str, Any]] = []
        while True:
            try:
                msgs = await sub.fetch(500, timeout=idle)
            except TimeoutError:
                break
            for m in msgs:
                out.append(json.loads(m.data))
                await m.ack()
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def read_subject(nats_url: str, subject: str, idle: float = 1.0) -> list[dict[str, Any]]:
    return asyncio.run(collect_subject(nats_url, subject, idle))


def post_hr(gateway: str, event: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{gateway}/v1/hr/events", json=event, timeout=10)
    assert r.status_code == 202, r.text
    return r.json()


def openssl(*args: str, input_: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=input_, capture_output=True, check=False)


def split_pem(text: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [p.strip() + "\n" + marker + "\n" for p in text.split(marker) if "BEGIN" in p]


def crl_urls(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return [n.value for dp in cdp for n in (dp.full_name or [])]


def count_subject(nats_url: str, subject: str) -> int:
    """How many messages the stream holds on ``subject`` (cheap: no consumer)."""

    async def run() -> int:
        import nats

        from shared.subjects import stream_for

        nc = await nats.connect(nats_url)
        try:
            info = await nc.jetstream().stream_info(stream_for(subject), subjects_filter=subject)
            return sum((info.state.subjects or {}).values())
        finally:
            await nc.close()

    return asyncio.run(run())
