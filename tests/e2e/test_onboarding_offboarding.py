"""Zero-touch onboarding and offboarding, every service its own process, over a real NATS."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from services.launcher.system import System
from tests.e2e.harness import (
    crl_urls,
    free_port,
    openssl,
    post_hr,
    read_subject,
    split_pem,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

USERS = {
    "alice": ["alice-laptop.corp.example", "alice-desktop"],
    "bob": ["bob-laptop", "bob-workstation"],
    "carol": ["carol-laptop", "carol-mac"],
}
TEMPLATE = "user-client"


@pytest.fixture(params=["sqlite", "postgres"])
def system(request: pytest.FixtureRequest, tmp_path: Path, nats_url: str):
    agents = {m: tmp_path / "machines" / m for devices in USERS.values() for m in devices}
    env = {}
    if request.param == "postgres":
        # Every service in one PostgreSQL database, each in a schema of its own.
        env["CERTBUS_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    sys_ = System(
        var_dir=tmp_path / "var",
        nats_url=nats_url,
        gateway_port=free_port(),
        public_port=free_port(),
        agents=agents,
        extra_env=env,
    )
    sys_.start(wait=120)
    yield sys_
    sys_.stop()


def store_files(root: Path, user: str) -> dict[str, Path]:
    store = root / "certs" / TEMPLATE
    alias = f"{TEMPLATE}-{user}"
    return {
        "cert": store / f"{alias}.crt",
        "key": store / f"{alias}.key",
        "chain": store / f"{alias}.chain.pem",
    }


def test_onboarding_installs_verified_certificates_and_offboarding_revokes_and_removes_them(
    system: System, nats_url: str
) -> None:
    gw = system.gateway_url
    for user, devices in USERS.items():
        post_hr(
            gw,
            {
                "type": "user.onboarded",
                "user": user,
                "email": f"{user}@example.com",
                "department": "engineering",
                "devices": devices,
            },
        )

    def all_installed() -> bool:
        return all(
            store_files(system.agents[m], u)["cert"].exists() for u, ds in USERS.items() for m in ds
        )

    wait_until(all_installed, 120, "every device's store to hold its certificate")

    serials: dict[str, str] = {}
    for user, devices in USERS.items():
        for machine in devices:
            files = store_files(system.agents[machine], user)
            assert files["key"].stat().st_mode & 0o777 == 0o600
            chain = split_pem(files["chain"].read_text())
            root = files["cert"].parent / "root.pem"
            root.write_text(chain[-1])
            untrusted = files["cert"].parent / "untrusted.pem"
            untrusted.write_text("".join(chain[:-1]))
            verified = openssl(
                "verify",
                "-CAfile",
                str(root),
                "-untrusted",
                str(untrusted),
                "-purpose",
                "sslclient",
                str(files["cert"]),
            )
            assert verified.returncode == 0, verified.stderr.decode() + verified.stdout.decode()
            cert_key = openssl("x509", "-noout", "-pubkey", "-in", str(files["cert"])).stdout
            priv_key = openssl("pkey", "-pubout", "-in", str(files["key"])).stdout
            assert cert_key and cert_key == priv_key
            cert = x509.load_pem_x509_certificate(files["cert"].read_bytes())
            assert cert.subject.rfc4514_string() == f"CN={user}"
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert sans.get_values_for_type(x509.RFC822Name) == [f"{user}@example.com"]
            serials[f"{user}@{machine}"] = format(cert.serial_number, "x")

    def alices_certificates() -> list[dict] | None:
        items = httpx.get(f"{gw}/v1/certificates", params={"owner": "alice"}, timeout=10).json()
        return items["items"] if all(c["locations"] for c in items["items"]) else None

    listed = wait_until(alices_certificates, 30, "inventory to record every location")
    assert sorted(c["serial"] for c in listed) == sorted(
        serials[f"alice@{m}"] for m in USERS["alice"]
    )
    one = httpx.get(f"{gw}/v1/certificates/{listed[0]['serial']}", timeout=10).json()
    assert one["id"] == listed[0]["id"]
    assert one["thumbprint_sha256"] and one["thumbprint_sha1"] and one["status"] == "active"
    assert [loc["machine"] for loc in one["locations"]] in [[m] for m in USERS["alice"]]

    cdp = crl_urls(store_files(system.agents[USERS["alice"][0]], "alice")["cert"])
    assert cdp and cdp[0].startswith(system.public_url)

    for user in USERS:
        post_hr(gw, {"type": "user.offboarded", "user": user, "comment": "left the company"})

    def stores_empty() -> bool:
        return not any(
            store_files(system.agents[m], u)["cert"].exists()
            or store_files(system.agents[m], u)["key"].exists()
            for u, ds in USERS.items()
            for m in ds
        )

    wait_until(stores_empty, 120, "the agents to remove every revoked certificate and key")

    wanted = {int(s, 16) for s in serials.values()}

    def crl_lists_everything() -> bytes | None:
        response = httpx.get(cdp[0], timeout=5)
        if response.status_code != 200:
            return None
        text = openssl("crl", "-inform", "DER", "-noout", "-text", input_=response.content)
        assert text.returncode == 0, text.stderr
        listed_serials = {
            int(s, 16) for s in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", text.stdout.decode())
        }
        return response.content if wanted <= listed_serials else None

    crl = x509.load_der_x509_crl(
        wait_until(crl_lists_everything, 30, "the CRL to list every serial")
    )
    for serial in wanted:
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        assert entry is not None
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        assert reason == x509.ReasonFlags.cessation_of_operation

    completed = wait_until(
        lambda: (lambda evs: evs if {e["user"] for e in evs} == set(USERS) else None)(
            read_subject(nats_url, "user.offboarding.completed")
        ),
        60,
        "user.offboarding.completed for every user",
    )
    for event in completed:
        devices = USERS[event["user"]]
        assert (event["found"], event["revoked"], event["removed"]) == (len(devices),) * 3

    revoked = read_subject(nats_url, "cert.revoked")
    assert sorted(e["serial"] for e in revoked) == sorted(serials.values())
    assert {e["reason"] for e in revoked} == {5}

    import json
    import os
    import subprocess
    import sys

    cli = subprocess.run(
        [sys.executable, "-m", "services.cli", "hr", "offboarding", "alice", "--json"],
        capture_output=True,
        env={**os.environ, "CERTBUS_URL": gw},
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr.decode()
    status = json.loads(cli.stdout)
    assert (status["status"], status["found"], status["revoked"], status["removed"]) == (
        "completed",
        2,
        2,
        2,
    )
    assert status["completed_at"]
