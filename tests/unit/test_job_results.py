"""A job result too large for one message is reported in parts, each under the bus's limit."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.agent.worker import Worker
from shared import job_results, pki, subjects
from shared.clock import utcnow
from shared.events import (
    AgentJob,
    AgentJobCompleted,
    AgentJobFailed,
    JobKind,
    StoreTarget,
    derived_id,
)

MAX_PAYLOAD = 64 * 1024
STORE = StoreTarget(machine="m1", store_path="etc/ssl", alias="-")


def self_signed(cn: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = utcnow()
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256()))  # fmt: skip


def pem_store(root: Path, count: int) -> None:
    store = root / STORE.store_path
    store.mkdir(parents=True)
    for i in range(count):
        (store / f"host-{i:04d}.crt").write_text(pki.pem(self_signed(f"host-{i:04d}.example.com")))


def inventory_job() -> AgentJob:
    return AgentJob(job_id="inv-1", machine="m1", kind=JobKind.INVENTORY, target=STORE)


def worker(root: Path, max_payload: int = MAX_PAYLOAD) -> Worker:
    return Worker("m1", root, max_payload=lambda: max_payload)


def test_a_result_that_fits_is_one_event_with_the_id_derived_from_the_job(tmp_path: Path) -> None:
    pem_store(tmp_path, 3)
    (completed,) = worker(tmp_path).run(inventory_job())
    assert isinstance(completed, AgentJobCompleted)
    assert (completed.part, completed.parts, completed.result_sha256) == (1, 1, None)
    assert completed.event_id == derived_id("inv-1", subjects.AGENT_JOB_COMPLETED)
    assert len(completed.result["entries"]) == 3


def test_an_inventory_too_large_for_one_message_comes_in_parts_under_the_limit(
    tmp_path: Path,
) -> None:
    pem_store(tmp_path, 150)
    (single,) = worker(tmp_path, max_payload=10 * MAX_PAYLOAD).run(inventory_job())
    assert isinstance(single, AgentJobCompleted)
    assert job_results.size(single) > MAX_PAYLOAD  # one message would be refused

    events = worker(tmp_path).run(inventory_job())

    parts = [e for e in events if isinstance(e, AgentJobCompleted)]
    assert len(parts) == len(events) > 2
    budget = job_results.part_budget(MAX_PAYLOAD)
    assert all(job_results.size(p) <= budget for p in parts)
    assert [(p.part, p.parts) for p in parts] == [(i, len(parts)) for i in range(1, len(parts) + 1)]
    assert {p.job_id for p in parts} == {"inv-1"}
    assert all(p.result["entries"] for p in parts)
    assert all(p.result["store"] == single.result["store"] for p in parts)
    assert len({p.result_sha256 for p in parts}) == 1
    assert job_results.merge([p.result for p in parts]) == single.result


def test_the_same_report_split_again_has_the_same_event_ids_and_a_changed_one_does_not(
    tmp_path: Path,
) -> None:
    pem_store(tmp_path, 120)
    first, again = worker(tmp_path).run(inventory_job()), worker(tmp_path).run(inventory_job())
    ids = [p.event_id for p in first]
    assert ids == [p.event_id for p in again]
    assert len(set(ids)) == len(ids)

    (tmp_path / STORE.store_path / "host-0000.crt").unlink()
    changed = worker(tmp_path).run(inventory_job())
    assert not {p.event_id for p in changed} & set(ids)


def test_parts_of_a_discovery_carry_its_stores() -> None:
    stores = [{"store_type": "pem", "store_path": f"dir/{i:05d}/" + "x" * 200, "entries": 1}
              for i in range(2000)]  # fmt: skip
    completed = AgentJobCompleted(
        job_id="disc-1", machine="m1", kind=JobKind.DISCOVER, result={"stores": stores}
    )
    parts = job_results.split(completed, 32 * 1024)
    assert len(parts) > 10
    assert all(job_results.size(p) <= 32 * 1024 for p in parts)
    assert job_results.merge([p.result for p in parts]) == {"stores": stores}


def test_a_result_whose_one_item_alone_is_too_large_is_reported_as_failed(tmp_path: Path) -> None:
    pem_store(tmp_path, 2)
    (failed,) = worker(tmp_path, max_payload=1500).run(inventory_job())
    assert isinstance(failed, AgentJobFailed)
    assert failed.code == "result_too_large" and "bytes" in failed.error


def test_a_part_outside_its_count_is_not_a_valid_event() -> None:
    with pytest.raises(ValueError, match="part 3 of 2"):
        AgentJobCompleted(job_id="j", machine="m", kind=JobKind.INVENTORY, part=3, parts=2,
                          result_sha256="ab")  # fmt: skip
    with pytest.raises(ValueError, match="SHA-256"):
        AgentJobCompleted(job_id="j", machine="m", kind=JobKind.INVENTORY, part=1, parts=2)
