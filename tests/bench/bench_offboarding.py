"""Offboarding fan-out: 1,000 users with 3 certificates each.

The clock runs from publishing the 1,000 ``user.offboarded`` events until OCSP answers revoked
for all 3,000 certificates and the CA's CRL served by the revocation endpoint lists them all.
The issuer (which signs the CRL) and the revocation service each run as their own process on
a real nats-server. The certificates are announced with ``cert.issued`` by the benchmark for
the issuer's CA (the issuer path is measured by bench_issuance_bus).

The baseline, measured in the same run, is the same work in one process without a bus:
revoking the same 3,000 rows (with their outbox events) in one SQLite transaction and building
and signing one CRL of 3,000 entries with ``cryptography``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from services.revocation import projection, revoker
from services.revocation.models import TABLES
from shared import subjects
from shared.bus import ensure_streams, make_broker, rpc_call
from shared.db import Database
from shared.events import UserOffboarded
from shared.outbox import OutboxMessage, stage
from shared.pki import RevocationReason, load_certificate
from shared.testing.revocation_kit import LabCa, cert_issued, drained, publish
from shared.testing.servers import NatsServer
from tests.bench.bench_issuance_bus import start_issuer, wait_for_ping
from tests.bench.common import Timer, report
from tests.bench.revocation_common import (
    fast_ocsp_statuses,
    free_port,
    ocsp_request_der,
    ocsp_statuses,
    start_revocation,
    wait_for_http,
)

USERS = int(os.environ.get("CERTBUS_BENCH_USERS", "1000"))
PER_USER = 3
CA_NAME = "issuing-ec"


def announced_certificates(ca: LabCa, ca_name: str) -> list:  # type: ignore[type-arg]
    """3 certificates per user, described as issued by the issuer's CA (serials are what count)."""
    template = ca.issue("template")
    events = []
    for u in range(USERS):
        for i in range(PER_USER):
            ev = cert_issued(ca_name, template, owner=f"user{u}")
            ev.serial = format(x509.random_serial_number(), "x")
            ev.thumbprint_sha256 = secrets.token_hex(32)
            ev.thumbprint_sha1 = secrets.token_hex(20)
            ev.subject_dn = f"CN=user{u}-{i}"
            events.append(ev)
    return events


async def publish_all(js, events, in_flight: int = 500) -> None:  # type: ignore[no-untyped-def]
    for start in range(0, len(events), in_flight):
        await asyncio.gather(*(publish(js, ev) for ev in events[start : start + in_flight]))


async def wait(predicate, within: float, what: str, every: float = 0.05) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(every)
    return time.perf_counter()


async def baseline(tmp: Path, events) -> dict[str, float]:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite+aiosqlite:///{tmp / 'baseline.db'}")
    await db.create_all(tables=[*TABLES, OutboxMessage.__table__])
    async with db.transaction() as session:
        certs = [await projection.record_issued(session, ev) for ev in events]
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "baseline CA")])
    order = revoker.RevocationOrder(
        RevocationReason.CESSATION_OF_OPERATION,
        "offboarded",
        cause="baseline",
        correlation_id="baseline",
    )
    with Timer() as rows:
        async with db.transaction() as session:
            result = await revoker.revoke(session, certs, order)
            stage(session, result.events)
    now = datetime.now(UTC)
    with Timer() as crl:
        entries = [
            x509.RevokedCertificateBuilder()
            .serial_number(int(ev.serial, 16))
            .revocation_date(now)
            .add_extension(x509.CRLReason(x509.ReasonFlags.cessation_of_operation), critical=False)
            .build()
            for ev in result.events
        ]
        (x509.CertificateRevocationListBuilder(revoked_certificates=entries)
         .issuer_name(issuer).last_update(now).next_update(now + timedelta(hours=1))
         .add_extension(x509.CRLNumber(1), critical=False)
         .sign(key, hashes.SHA256()))  # fmt: skip
    await db.dispose()
    return {"rows": rows.seconds, "crl": crl.seconds, "total": rows.seconds + crl.seconds}


async def run() -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="certbus-bench-offboarding-"))
    server = NatsServer(store_dir=tmp / "jetstream").start()
    await ensure_streams(server.url)
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    issuer = start_issuer(tmp / "issuer", server.url, secrets.token_urlsafe(16))
    revocation = start_revocation(server.url, tmp / "var", port)
    broker = make_broker(server.url, "bench")
    await broker.start()
    try:
        await wait_for_ping(server.url, "issuer")
        await wait_for_http(url)
        cas = await rpc_call(broker, "issuer", "cas.list", {})
        ca_cert = load_certificate(next(c for c in cas["items"] if c["name"] == CA_NAME)
                                   ["certificate_pem"])  # fmt: skip
        events = announced_certificates(LabCa("shape"), CA_NAME)
        await publish_all(js, events)
        await wait(
            lambda: drained(js, "revocation", subjects.CERT_ISSUED), 300, "projection", every=0.5
        )
        bodies = [ocsp_request_der(ca_cert, int(ev.serial, 16)) for ev in events]

        async def ocsp_ready() -> bool:
            return (await ocsp_statuses(url, bodies[:1])) == [ocsp.OCSPCertStatus.GOOD]

        await wait(ocsp_ready, 120, "OCSP signer", every=0.5)
        expected = {int(ev.serial, 16) for ev in events}

        offboardings = [UserOffboarded(user=f"user{u}", comment="bench") for u in range(USERS)]
        started = time.perf_counter()
        await publish_all(js, offboardings)
        published = time.perf_counter()

        async def all_revoked_events() -> bool:
            info = await js.stream_info("CERT", subjects_filter=subjects.CERT_REVOKED)
            return (info.state.subjects or {}).get(subjects.CERT_REVOKED, 0) >= len(events)

        events_done = await wait(all_revoked_events, 600, "cert.revoked")

        sweeps: list[tuple[float, int]] = []

        async def ocsp_all_revoked() -> bool:
            begun = time.perf_counter()
            answers = await fast_ocsp_statuses("127.0.0.1", port, bodies)
            revoked_now = answers.count(ocsp.OCSPCertStatus.REVOKED)
            sweeps.append((round(time.perf_counter() - begun, 2), revoked_now))
            return revoked_now == len(bodies)

        ocsp_done = await wait(ocsp_all_revoked, 600, "OCSP revoked for all")
        crl_sizes: list[int] = []
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:

            async def crl_lists_all() -> bool:
                response = await http.get(f"/crl/{CA_NAME}.crl")
                if response.status_code != 200:
                    return False
                listed = {r.serial_number for r in x509.load_der_x509_crl(response.content)}
                crl_sizes.append(len(listed))
                return expected <= listed

            crl_done = await wait(crl_lists_all, 600, "CRL lists all", every=0.1)
    finally:
        await broker.stop()
        for process in (revocation, issuer):
            process.send_signal(signal.SIGTERM)
        for process in (revocation, issuer):
            process.wait(30)
        await nc.close()
        server.stop()
    base = await baseline(tmp, events)
    total = max(ocsp_done, crl_done) - started
    return {
        "users": USERS,
        "certificates": len(events),
        "publish_offboardings_seconds": published - started,
        "all_cert_revoked_events_seconds": events_done - started,
        "ocsp_revoked_for_all_seconds": ocsp_done - started,
        "crl_lists_all_seconds": crl_done - started,
        "end_to_end_seconds": total,
        "revocations_per_second_end_to_end": len(events) / total,
        "crl_polls_seen_sizes": crl_sizes[-5:],
        "ocsp_sweeps_seconds_and_revoked": sweeps[-5:],
        "baseline_revoke_rows_seconds": base["rows"],
        "baseline_build_crl_seconds": base["crl"],
        "baseline_total_seconds": base["total"],
        "ratio_end_to_end_to_baseline": total / base["total"],
        "load": os.getloadavg()[0],
    }


def main() -> dict[str, object]:
    return report("offboarding", asyncio.run(run()))


if __name__ == "__main__":
    main()
