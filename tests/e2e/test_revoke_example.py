"""infra/examples/revoke_users_certificates.py run for real: every service its own process (the
launcher's ``System``), a real nats-server, agents with stores on disk, all on 127.0.0.1.

The script finds what was issued to the listed users and what sits on their machines, revokes
it through the real revocation service with a reason and comment; the test then checks the
revocation service's answer, the CRL (read with ``openssl crl``), inventory and the stores."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from services.cli.sdk import Certbus, CertbusError
from services.launcher.system import System
from tests.e2e.harness import crl_urls, free_port, openssl, post_hr, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "examples" / "revoke_users_certificates.py"
USERS = {"rita": ["rita-laptop", "rita-pc"], "sam": ["sam-laptop"]}
TEMPLATE = "user-client"
STORE = f"certs/{TEMPLATE}"
REASON, REASON_CODE, CRL_REASON = "superseded", 4, "Superseded"
COMMENT = "left the division (ticket 4711)"
# This test's own policy, so that edits to infra/policy.yaml do not change what it proves.
POLICY = {
    "rules": [{"name": "every-user", "match": {}, "provision": [{"template": TEMPLATE}]}],
    "agents": {"known_devices": True, "auto_approve": []},
}


@pytest.fixture
def system(tmp_path: Path, nats_url: str):
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    sys_ = System(
        var_dir=tmp_path / "var",
        nats_url=nats_url,
        gateway_port=free_port(),
        public_port=free_port(),
        agents={m: tmp_path / "machines" / m for ms in USERS.values() for m in ms},
        extra_env={"CERTBUS_POLICY_FILE": str(policy)},
    )
    try:
        sys_.start(wait=60)
        yield sys_
    finally:
        sys_.stop()


def files_of(root: Path, alias: str) -> list[Path]:
    store = root / STORE
    return [store / f"{alias}.crt", store / f"{alias}.key", store / f"{alias}.chain.pem"]


def crl_entries(der: bytes) -> dict[int, str]:
    """serial -> CRL reason, as openssl prints them."""
    text = openssl("crl", "-inform", "DER", "-noout", "-text", input_=der)
    assert text.returncode == 0, text.stderr.decode()
    entries: dict[int, str] = {}
    for block in text.stdout.decode().split("Serial Number:")[1:]:
        serial = int(block.split()[0], 16)
        reason = re.search(r"CRL Reason Code:\s*\n\s*(\S+)", block)
        entries[serial] = reason.group(1) if reason else ""
    return entries


def test_the_revoke_example_revokes_every_certificate_of_the_users_and_their_machines(
    system: System, tmp_path: Path
) -> None:
    gw = system.gateway_url
    for user, devices in USERS.items():
        post_hr(gw, {"type": "user.onboarded", "user": user, "email": f"{user}@example.com",
                     "devices": devices})  # fmt: skip

    with Certbus(gw) as cb:
        # Everybody's policy certificate, installed by each machine's agent.
        installs = {(u, m): system.agents[m] for u, ms in USERS.items() for m in ms}

        def all_installed() -> bool:
            return all(
                files_of(root, f"{TEMPLATE}-{u}")[0].exists() for (u, _), root in installs.items()
            )

        wait_until(all_installed, 40, "every machine's policy certificate")
        # A service's certificate on rita's laptop: not hers, but present on her machine.
        store = wait_until(lambda: cb.stores.find("rita-laptop", STORE), 10, "the laptop's store")
        build = cb.stores.enroll(
            store["id"],
            "tls-server",
            "CN=build.example.com",
            sans=["dns:build.example.com"],
            alias="build",
            owner="svc-build",
        )
        # Somebody else's certificate (tom is not listed and has no device): left alone.
        toms = cb.enroll.pfx(
            "tls-server",
            "CN=tom.example.com",
            sans=["dns:tom.example.com"],
            password="Tom-s3cret-pass",
            owner="tom",
        )
        assert base64.b64decode(toms["pkcs12_b64"])
        laptop = system.agents["rita-laptop"]
        wait_until(lambda: files_of(laptop, "build")[0].exists(), 20, "the build certificate")

        def catalogued() -> list[dict] | None:
            listed = {u: cb.certs.list(owner=u) for u in (*USERS, "svc-build")}
            certs = [c for items in listed.values() for c in items]
            return certs if len(certs) == 4 and all(c["locations"] for c in certs) else None

        certs = wait_until(catalogued, 20, "inventory to record the four certificates installed")
        by_id = {c["id"]: c for c in certs}

        def revocation_knows_them() -> bool:
            # Revocation learns certificates from cert.issued on its own consumer: it may lag
            # behind inventory, and a revocation of one it has not seen yet is refused.
            try:
                return all(cb.revocation.status(i)["status"] == "good" for i in by_id)
            except CertbusError:
                return False

        wait_until(revocation_knows_them, 20, "revocation to know the four certificates")
        where = {c["id"]: (c["owner"], c["locations"][0]["machine"], c["locations"][0]["alias"])
                 for c in certs}  # fmt: skip
        assert sorted(where.values()) == sorted([
            ("rita", "rita-laptop", f"{TEMPLATE}-rita"), ("rita", "rita-pc", f"{TEMPLATE}-rita"),
            ("sam", "sam-laptop", f"{TEMPLATE}-sam"), ("svc-build", "rita-laptop", "build"),
        ])  # fmt: skip
        assert build["request_id"]

        users = tmp_path / "users.txt"
        users.write_text("rita\nsam\nnobody-here\n")
        env = {**os.environ, "CERTBUS_URL": gw, "PYTHONPATH": str(REPO)}
        run = subprocess.run(
            [sys.executable, str(SCRIPT), "--users", str(users), "--reason", REASON,
             "--comment", COMMENT],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        listed = dict(line.split("\t") for line in lines[:-1])
        assert set(listed) == set(by_id)
        for cert_id, (owner, machine, _) in where.items():
            expected = f"present on {machine}" if owner == "svc-build" else f"issued to {owner}"
            assert listed[cert_id] == expected
        assert lines[-1] == "revoked: {'revoked': 4}"

        # The revocation service: each revoked, with the reason and comment the script gave.
        for cert_id in by_id:
            status = cb.revocation.status(cert_id)
            assert status["status"] == "revoked", status
            revocation = status["revocation"]
            assert (revocation["reason"], revocation["reason_code"]) == (REASON, REASON_CODE)
            assert revocation["comment"] == COMMENT
        assert cb.revocation.status(toms["id"])["status"] == "good"

        # The CRL at the distribution point written in the certificates, as openssl reads it.
        wanted = {int(c["serial"], 16) for c in certs}
        cdp = crl_urls(files_of(laptop, f"{TEMPLATE}-rita")[0])
        assert cdp and cdp[0].startswith(system.public_url)

        def crl_lists_them() -> dict[int, str] | None:
            response = httpx.get(cdp[0], timeout=5)
            entries = crl_entries(response.content) if response.status_code == 200 else {}
            return entries if wanted <= set(entries) else None

        entries = wait_until(crl_lists_them, 20, "the CRL to list the four serials")
        assert {entries[s] for s in wanted} == {CRL_REASON}
        assert int(toms["serial"], 16) not in entries

        # The agents took every revoked certificate and its key out of their stores.
        gone = [p for (u, _), root in installs.items() for p in files_of(root, f"{TEMPLATE}-{u}")]
        gone += files_of(laptop, "build")
        wait_until(lambda: not any(p.exists() for p in gone), 20, "the agents to remove them")

        def inventory_agrees() -> bool:
            now = [cb.certs.get(i) for i in by_id]
            return all(c["status"] == "revoked" and not c["locations"] for c in now)

        wait_until(inventory_agrees, 15, "inventory to mark them revoked and installed nowhere")
        for cert_id in by_id:
            revocation = cb.certs.get(cert_id)["revocation"]
            assert (revocation["reason"], revocation["comment"]) == (REASON, COMMENT)
        assert cb.certs.get(toms["id"])["status"] == "active"

        # Run again: nothing is left to revoke.
        again = subprocess.run(
            [sys.executable, str(SCRIPT), "--users", str(users), "--reason", REASON,
             "--comment", COMMENT],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert again.returncode == 0 and again.stdout.strip() == "nothing to revoke", again
