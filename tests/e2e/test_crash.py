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
from tests.e2e.harness import free_port, post_hr, read_subject, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

MACHINES = ["crash-m1", "crash-m2"]
USERS = [f"user{i:02d}" for i in range(12)]
LEAVERS = USERS[:6]
STAYERS = USERS[6:]


def cert_file(system: System, machine: str, user: str) -> Path:
    return system.agents[machine] / "certs" / "user-client" / f"user-client-{user}.crt"


@pytest.fixture
def system(tmp_path: Path, nats_url: str):
    sys_ = System(
        var_dir=tmp_path / "var",
        nats_url=nats_url,
        gateway_port=free_port(),
        public_port=free_port(),
        agents={m: tmp_path / "machines" / m for m in MACHINES},
    )
    sys_.start(wait=120)
    yield sys_
    sys_.stop()


def test_crashing_issuer_and_revocation_mid_burst_issue_and_revoke_exactly_once(
    system: System, nats_url: str
) -> None:
    gw = system.gateway_url
    for user in USERS:
        post_hr(gw, {"type": "user.onboarded", "user": user, "email": f"{user}@example.com",
                     "devices": MACHINES})
    wait_until(lambda: read_subject(nats_url, "cert.issued", idle=0.2), 60, "a first cert.issued",
               interval=0.05)
    system.processes["issuer"].kill()
    time.sleep(1.0)
    system.processes["issuer"].start()

    for user in LEAVERS:
        post_hr(gw, {"type": "user.offboarded", "user": user})
    wait_until(lambda: read_subject(nats_url, "cert.revoked", idle=0.2), 60, "a first cert.revoked",
               interval=0.05)
    system.processes["revocation"].kill()
    time.sleep(1.0)
    system.processes["revocation"].start()

    wait_until(lambda: all(cert_file(system, m, u).exists() for u in STAYERS for m in MACHINES),
               180, "every stayer's certificate installed on both machines")
    wait_until(lambda: not any(cert_file(system, m, u).exists() for u in LEAVERS for m in MACHINES),
               180, "every leaver's certificate removed")
    completed = wait_until(
        lambda: (lambda evs: evs if {e["user"] for e in evs} >= set(LEAVERS) else None)(
            read_subject(nats_url, "user.offboarding.completed")),
        180, "user.offboarding.completed for every leaver")

    issued = read_subject(nats_url, "cert.issued")
    serials_by_request: dict[str, set[str]] = defaultdict(set)
    for event in issued:
        serials_by_request[event["request_id"]].add(event["serial"])
    assert len(serials_by_request) == len(USERS) * len(MACHINES)
    assert all(len(s) == 1 for s in serials_by_request.values()), "a request was issued twice"
    assert len(issued) == len(serials_by_request), "a cert.issued event was published twice"

    leaver_serials = {e["serial"] for e in issued if e["owner"] in LEAVERS}
    revoked = read_subject(nats_url, "cert.revoked")
    revoked_serials = [e["serial"] for e in revoked]
    assert sorted(revoked_serials) == sorted(leaver_serials), "each leaver cert revoked once"
    assert len({e["user"] for e in completed}) == len(completed), "completion published twice"

    for user in STAYERS:
        certs = httpx.get(f"{gw}/v1/certificates", params={"owner": user}, timeout=10).json()
        assert [c["status"] for c in certs["items"]] == ["active", "active"]

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
