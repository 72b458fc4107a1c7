"""Inventory against a real nats-server and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.inventory.identities import request_id_for
from shared import subjects
from shared.clock import utcnow
from shared.events import (
    CertInstalled,
    CertIssued,
    CertRemoved,
    CertRequested,
    CertRevoked,
    StoreTarget,
    UserOffboarded,
    UserOnboarded,
    derived_id,
)
from shared.pki import RevocationReason
from shared.runtime import ServiceRuntime
from tests.inventory_kit import BusReader, TestCA, eventually, publish

pytestmark = pytest.mark.integration

JOBS = subjects.AGENT_JOBS_WILDCARD


async def rpc(nc: Any, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
    reply = await nc.request(
        subjects.rpc("inventory", operation), json.dumps(payload).encode(), timeout=10
    )
    return json.loads(reply.data)


def requested_from(job: dict[str, Any]) -> tuple[CertRequested, ec.EllipticCurvePrivateKey]:
    """What the agent would answer to a reenroll job (a key and a CSR), made here."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string(job["subject_dn"]))
        .sign(key, hashes.SHA256())
    )
    request = CertRequested(
        request_id=job["request_id"], template=job["template"], owner=job["owner"],
        device=job["machine"], target=StoreTarget(**job["target"]), job_id=job["job_id"],
        csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
    )  # fmt: skip
    return request, key


async def locations_recorded(nc: Any, issued: list[CertIssued]) -> None:
    async def check() -> bool:
        for i in issued:
            got = await rpc(nc, "certs.get", {"id": i.cert_id})
            if not got["ok"] or not got["result"]["locations"]:
                return False
        return True

    assert await eventually(check)


def installed(issued: CertIssued) -> CertInstalled:
    assert issued.target is not None
    return CertInstalled(
        cert_id=issued.cert_id,
        serial=issued.serial,
        thumbprint_sha256=issued.thumbprint_sha256,
        target=issued.target,
    )


async def test_onboarding_sends_one_reenroll_job_per_device_and_redelivery_sends_none(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader = BusReader(nats_client)
    onboarded = UserOnboarded(
        user="alice",
        email="alice@example.com",
        department="eng",
        devices=["alice-laptop", "alice.desktop.example"],
    )
    await publish(nats_client, onboarded)

    jobs = await reader.take(JOBS, 2)
    assert sorted(j["machine"] for j in jobs) == ["alice-laptop", "alice.desktop.example"]
    for job in jobs:
        assert job["kind"] == "reenroll"
        assert job["request_id"] == request_id_for("alice", job["machine"], "user-client")
        assert job["job_id"] == derived_id("job", job["request_id"], "reenroll")
        assert job["subject_dn"] == "CN=alice"
        assert job["sans"] == ["email:alice@example.com"]
        assert job["target"]["store_path"] == "certs/user-client"
        assert job["target"]["alias"] == "user-client-alice"
        assert job["correlation_id"] == onboarded.correlation_id
    laptop = await reader.js.stream_info("AGENT")
    assert laptop.state.messages == 2

    again = onboarded.model_copy(update={"event_id": "same-onboarding-sent-again"})
    await publish(nats_client, again)
    await publish(
        nats_client,
        UserOnboarded(user="alice", email="alice@example.com", devices=["alice-laptop"]),
    )
    assert await reader.none_more(JOBS) == []


async def test_an_issued_certificate_with_a_target_is_sent_to_its_agent_to_install(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader, ca = BusReader(nats_client), TestCA()
    await publish(nats_client, UserOnboarded(user="bob", devices=["bob-laptop"]))
    (job,) = await reader.take(JOBS, 1)
    request, _ = requested_from(job)
    issued = ca.issue(request)
    await publish(nats_client, issued)

    (add,) = await reader.take(JOBS, 1)
    assert add["kind"] == "add"
    assert add["job_id"] == derived_id("job", issued.cert_id, "add")
    assert add["machine"] == "bob-laptop"
    assert (add["cert_id"], add["serial"], add["request_id"]) == (
        issued.cert_id,
        issued.serial,
        issued.request_id,
    )
    assert add["certificate_pem"] == issued.certificate_pem
    assert add["chain_pem"] == issued.chain_pem
    assert add["target"] == job["target"]

    await publish(nats_client, issued.model_copy(update={"event_id": "issued-again"}))
    assert await reader.none_more(JOBS) == []

    got = await rpc(nats_client, "certs.get", {"id": issued.serial})
    assert got["ok"] and got["result"]["id"] == issued.cert_id
    assert got["result"]["owner"] == "bob" and got["result"]["status"] == "active"
    by_thumb = await rpc(nats_client, "certs.get", {"id": issued.thumbprint_sha1.upper()})
    assert by_thumb["result"]["id"] == issued.cert_id
    listed = await rpc(nats_client, "certs.list", {"owner": "bob"})
    assert listed["result"]["total"] == 1
    assert listed["result"]["items"][0]["serial"] == issued.serial
    missing = await rpc(nats_client, "certs.get", {"id": "no-such-cert"})
    assert missing["error"]["code"] == "not_found" and missing["error"]["status"] == 404


async def test_offboarding_completes_once_every_certificate_is_revoked_and_removed(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader, ca = BusReader(nats_client), TestCA()
    await publish(
        nats_client,
        UserOnboarded(user="carol", email="carol@example.com", devices=["carol-a", "carol-b"]),
    )
    reenrolls = await reader.take(JOBS, 2)
    issued = [ca.issue(requested_from(j)[0]) for j in reenrolls]
    await publish(nats_client, *issued)
    assert len(await reader.take(JOBS, 2)) == 2
    await publish(nats_client, *(installed(i) for i in issued))
    await locations_recorded(nats_client, issued)

    offboarded = UserOffboarded(user="carol", comment="left the company")
    await publish(nats_client, offboarded)
    revoked = [
        CertRevoked(cert_id=i.cert_id, serial=i.serial, issuer_ca=ca.name,
                    reason=RevocationReason.CESSATION_OF_OPERATION, comment="carol left",
                    revoked_at=utcnow(), owner="carol")
        for i in issued
    ]  # fmt: skip
    await publish(nats_client, *revoked)
    removes = await reader.take(JOBS, 2)
    assert sorted((r["kind"], r["machine"]) for r in removes) == [
        ("remove", "carol-a"),
        ("remove", "carol-b"),
    ]
    assert await reader.none_more(subjects.USER_OFFBOARDING_COMPLETED, wait=1.0) == []

    removed = [CertRemoved(cert_id=i.cert_id, serial=i.serial, target=i.target) for i in issued]
    await publish(nats_client, *removed)
    (done,) = await reader.take(subjects.USER_OFFBOARDING_COMPLETED, 1)
    assert (done["user"], done["found"], done["revoked"], done["removed"]) == ("carol", 2, 2, 2)
    assert sorted(done["cert_ids"]) == sorted(i.cert_id for i in issued)
    assert done["correlation_id"] == offboarded.correlation_id

    await publish(
        nats_client, *(r.model_copy(update={"event_id": r.event_id + "-again"}) for r in removed)
    )
    await publish(nats_client, offboarded.model_copy(update={"event_id": "offboarded-again"}))
    assert await reader.none_more(subjects.USER_OFFBOARDING_COMPLETED) == []

    listed = await rpc(nats_client, "certs.list", {"owner": "carol", "status": "revoked"})
    assert listed["result"]["total"] == 2
    assert all(
        c["revocation"]["reason"] == "cessationOfOperation" and c["locations"] == []
        for c in listed["result"]["items"]
    )


async def test_a_certificate_issued_after_offboarding_is_not_installed(
    inventory: ServiceRuntime, nats_client: Any
) -> None:
    reader, ca = BusReader(nats_client), TestCA()
    await publish(nats_client, UserOnboarded(user="dave", devices=["dave-pc"]))
    (job,) = await reader.take(JOBS, 1)
    await publish(nats_client, UserOffboarded(user="dave"))
    assert await reader.none_more(subjects.USER_OFFBOARDING_COMPLETED, wait=1.0) == []

    issued = ca.issue(requested_from(job)[0])
    await publish(nats_client, issued)
    assert await reader.none_more(JOBS, wait=1.0) == []
    await publish(
        nats_client,
        CertRevoked(
            cert_id=issued.cert_id,
            serial=issued.serial,
            issuer_ca=ca.name,
            reason=RevocationReason.CESSATION_OF_OPERATION,
            comment="issued after dave left",
            revoked_at=utcnow(),
            owner="dave",
        ),
    )
    (done,) = await reader.take(subjects.USER_OFFBOARDING_COMPLETED, 1)
    assert (done["found"], done["revoked"], done["removed"]) == (1, 1, 0)
