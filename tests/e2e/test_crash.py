"""kill -9 the issuer and the revocation service in the middle of a burst: nothing is lost,
nothing is issued or revoked twice."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from services.launcher.system import System
from tests.e2e.harness import count_subject, free_port, post_hr, read_subject, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

USERS = [f"user{i:02d}" for i in range(8)]
LEAVERS = USERS[:4]
STAYERS = USERS[4:]
MACHINE = {user: f"{user}-laptop" for user in USERS}


def cert_file(system: System, user: str) -> Path:
    root = system.agents[MACHINE[user]]
    return root / "certs" / "user-client" / f"user-client-{user}.crt"


@pytest.fixture
def system(tmp_path: Path, nats_url: str):
    sys_ = System(
        var_dir=tmp_path / "var",
        nats_url=nats_url,
        gateway_port=free_port(),
        public_port=free_port(),
        agents={m: tmp_path / "machines" / m for m in MACHINE.values()},
    )
    sys_.start(wait=120)
    yield sys_
    sys_.stop()


def test_crashing_issuer_and_revocation_mid_burst_issue_and_revoke_exactly_once(
    system: System, nats_url: str
) -> None:
    gw = system.gateway_url
    for user in USERS:
        post_hr(
            gw,
            {
                "type": "user.onboarded",
                "user": user,
                "email": f"{user}@example.com",
                "devices": [MACHINE[user]],
            },
        )
    before_kill = wait_until(
        lambda: read_subject(nats_url, "cert.issued", idle=0.2),
        60,
        "a first cert.issued",
        interval=0.05,
    )
    system.processes["issuer"].kill()
    print(f"issuer killed after {len(before_kill)} of {len(USERS)} certificates")
    time.sleep(1.0)
    system.processes["issuer"].start()

    for user in LEAVERS:
        post_hr(gw, {"type": "user.offboarded", "user": user})
    revoked_before = wait_until(
        lambda: read_subject(nats_url, "cert.revoked", idle=0.2),
        60,
        "a first cert.revoked",
        interval=0.05,
    )
    system.processes["revocation"].kill()
    print(f"revocation killed after {len(revoked_before)} of {len(LEAVERS)} revocations")
    time.sleep(1.0)
    system.processes["revocation"].start()

    wait_until(
        lambda: all(cert_file(system, u).exists() for u in STAYERS),
        180,
        "every stayer's certificate installed",
    )
    wait_until(
        lambda: not any(cert_file(system, u).exists() for u in LEAVERS),
        180,
        "every leaver's certificate removed",
    )
    completed = wait_until(
        lambda: (lambda evs: evs if {e["user"] for e in evs} >= set(LEAVERS) else None)(
            read_subject(nats_url, "user.offboarding.completed")
        ),
        60,
        "user.offboarding.completed for every leaver",
    )

    issued = read_subject(nats_url, "cert.issued")
    serials_by_request: dict[str, set[str]] = defaultdict(set)
    for event in issued:
        serials_by_request[event["request_id"]].add(event["serial"])
    assert len(serials_by_request) == len(USERS)
    assert all(len(s) == 1 for s in serials_by_request.values()), "a request was issued twice"
    assert len(issued) == len(serials_by_request), "a cert.issued event was published twice"

    leaver_serials = {e["serial"] for e in issued if e["owner"] in LEAVERS}
    revoked = read_subject(nats_url, "cert.revoked")
    revoked_serials = [e["serial"] for e in revoked]
    assert sorted(revoked_serials) == sorted(leaver_serials), "each leaver cert revoked once"
    assert len({e["user"] for e in completed}) == len(completed), "completion published twice"

    for user in STAYERS:
        certs = httpx.get(f"{gw}/v1/certificates", params={"owner": user}, timeout=10).json()
        assert [c["status"] for c in certs["items"]] == ["active"]

    ca = issued[0]["issuer_ca"]

    def crl_has_all() -> x509.CertificateRevocationList | None:
        r = httpx.get(f"{system.public_url}/crl/{ca}.crl", timeout=5)
        if r.status_code != 200:
            return None
        crl = x509.load_der_x509_crl(r.content)
        listed = {format(entry.serial_number, "x") for entry in crl}
        return crl if leaver_serials <= listed else None

    crl = wait_until(crl_has_all, 30, "the CRL to list every leaver's certificate")
    assert len(list(crl)) == len(leaver_serials)


BURST = 1000


def _csr(user: str) -> str:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(f"{user}@example.com")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _publish(nats_url: str, events: list) -> None:
    import asyncio

    import nats

    async def run() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for i in range(0, len(events), 100):
            await asyncio.gather(
                *(
                    js.publish(
                        e.subject_name(),
                        e.model_dump_json().encode(),
                        headers={"Nats-Msg-Id": e.event_id},
                    )
                    for e in events[i : i + 100]
                )
            )
        await nc.close()

    asyncio.run(run())


@pytest.fixture
def bare_system(tmp_path: Path, nats_url: str):
    sys_ = System(
        var_dir=tmp_path / "var",
        nats_url=nats_url,
        gateway_port=free_port(),
        public_port=free_port(),
    )
    sys_.start(wait=120)
    yield sys_
    sys_.stop()


def test_a_burst_of_requests_and_offboardings_survives_kill_9_of_issuer_and_revocation(
    bare_system: System, nats_url: str
) -> None:
    from shared.events import CertRequested, UserOffboarded

    system = bare_system
    users = [f"burst{i:03d}" for i in range(BURST)]
    requests = [
        CertRequested(request_id=f"burst-{u}", template="user-client", csr_pem=_csr(u), owner=u)
        for u in users
    ]
    _publish(nats_url, requests)
    at_kill = wait_until(
        lambda: (lambda n: n if n >= 100 else 0)(count_subject(nats_url, "cert.issued")),
        60,
        "issuance to get going",
        interval=0.01,
    )
    system.processes["issuer"].kill()
    print(f"issuer killed after {at_kill} of {BURST} certificates")
    # The same requests again under new event ids: the issuer must still issue each once.
    _publish(
        nats_url,
        [
            r.model_copy(update={"event_id": f"again-{r.request_id}"})
            for r in requests[: BURST // 4]
        ],
    )
    system.processes["issuer"].start()

    wait_until(
        lambda: count_subject(nats_url, "cert.issued") >= BURST, 120, "every request to be issued"
    )
    time.sleep(1.0)  # time for a duplicate, if one were coming
    issued = read_subject(nats_url, "cert.issued", idle=0.5)
    by_request: dict[str, set[str]] = defaultdict(set)
    for event in issued:
        by_request[event["request_id"]].add(event["serial"])
    assert all(len(s) == 1 for s in by_request.values()), "a request was issued twice"
    assert len(issued) == BURST, "a cert.issued event was published twice"
    assert at_kill < BURST, "the issuer was killed after it had finished: no crash mid-burst"

    leavers = users[: BURST // 2]
    _publish(nats_url, [UserOffboarded(user=u) for u in leavers])
    at_kill = wait_until(
        lambda: (lambda n: n if n >= 50 else 0)(count_subject(nats_url, "cert.revoked")),
        60,
        "revocations to get going",
        interval=0.01,
    )
    system.processes["revocation"].kill()
    print(f"revocation killed after {at_kill} of {len(leavers)} revocations")
    system.processes["revocation"].start()

    leaver_serials = {e["serial"] for e in issued if e["owner"] in set(leavers)}
    wait_until(
        lambda: count_subject(nats_url, "cert.revoked") >= len(leaver_serials),
        120,
        "every leaver's certificate to be revoked",
    )
    time.sleep(1.0)
    revoked = read_subject(nats_url, "cert.revoked", idle=0.5)
    assert sorted(e["serial"] for e in revoked) == sorted(leaver_serials), "revoked exactly once"
    assert at_kill < len(leavers), "revocation was killed after it had finished"

    ca = issued[0]["issuer_ca"]

    def crl_lists_all() -> bool:
        r = httpx.get(f"{system.public_url}/crl/{ca}.crl", timeout=5)
        return (
            r.status_code == 200
            and {format(e.serial_number, "x") for e in x509.load_der_x509_crl(r.content)}
            == leaver_serials
        )

    wait_until(crl_lists_all, 30, "the CRL to list exactly the leavers' certificates")
