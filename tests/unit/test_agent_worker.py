"""The agent's jobs on a real file system: keys made here, CSRs, installs and removals."""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from services.agent import keys
from services.agent.app import STDERR_TAIL, post_install
from services.agent.errors import RetryLater
from services.agent.worker import Worker
from shared import pki
from shared.events import AgentJob, JobKind, StoreTarget, derived_id
from tests.inventory_kit import TestCA, cert_and_key_match

TARGET = StoreTarget(machine="m1", store_path="certs/user-client", alias="user-client-alice")


def reenroll_job(request_id: str = "req-1", **fields: object) -> AgentJob:
    values: dict[str, object] = dict(
        job_id=f"job-{request_id}", machine="m1", kind=JobKind.REENROLL, target=TARGET,
        request_id=request_id, template="user-client", subject_dn="CN=alice,O=Example",
        sans=["email:alice@example.com", "dns:alice.example", "uri:urn:alice", "ip:10.0.0.7"],
        owner="alice",
    )  # fmt: skip
    values.update(fields)
    return AgentJob(**values)  # type: ignore[arg-type]


def add_job(cert: x509.Certificate, ca: TestCA, request_id: str = "req-1") -> AgentJob:
    return AgentJob(
        job_id=f"add-{request_id}", machine="m1", kind=JobKind.ADD, target=TARGET,
        request_id=request_id, cert_id="cert-1", serial=pki.render_serial(cert.serial_number),
        certificate_pem=pki.pem(cert), chain_pem=[pki.pem(ca.certificate)],
    )  # fmt: skip


def enroll(worker: Worker, ca: TestCA, job: AgentJob) -> x509.Certificate:
    requested = worker.run(job)[0]
    return ca.sign(x509.load_pem_x509_csr(requested.csr_pem.encode()))  # type: ignore[attr-defined]


def test_reenroll_makes_a_private_key_file_and_a_csr_for_it(tmp_path: Path) -> None:
    events = Worker("m1", tmp_path).run(reenroll_job())

    requested, completed = events
    assert requested.subject == "cert.requested" and completed.subject == "agent.job.completed"
    key_file = tmp_path / ".certbus" / "pending" / "req-1.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    csr = x509.load_pem_x509_csr(requested.csr_pem.encode())  # type: ignore[attr-defined]
    assert csr.is_signature_valid
    assert keys.public_der(csr) == keys.public_der(keys.load(key_file))
    assert csr.subject.rfc4514_string() == "CN=alice,O=Example"
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]
    assert sans.get_values_for_type(x509.DNSName) == ["alice.example"]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:alice"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    assert requested.event_id == derived_id("job-req-1", "cert.requested")
    assert (requested.device, requested.owner, requested.job_id) == ("m1", "alice", "job-req-1")


def test_a_repeated_reenroll_reuses_the_key_and_publishes_the_same_event_ids(
    tmp_path: Path,
) -> None:
    worker = Worker("m1", tmp_path)
    first, second = worker.run(reenroll_job()), worker.run(reenroll_job())
    csr1, csr2 = (x509.load_pem_x509_csr(e[0].csr_pem.encode()) for e in (first, second))  # type: ignore[attr-defined]
    assert keys.public_der(csr1) == keys.public_der(csr2)
    assert [e.event_id for e in first] == [e.event_id for e in second]


def test_reenroll_honours_the_key_type(tmp_path: Path) -> None:
    Worker("m1", tmp_path).run(reenroll_job(key_type="rsa-3072"))
    key = keys.load(tmp_path / ".certbus" / "pending" / "req-1.key")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072


def test_a_bad_san_fails_the_job_with_a_reason(tmp_path: Path) -> None:
    (failed,) = Worker("m1", tmp_path).run(reenroll_job(sans=["phone:12345"]))
    assert failed.subject == "agent.job.failed"
    assert failed.code == "invalid_san" and "phone" in failed.error  # type: ignore[attr-defined]


def test_add_installs_certificate_key_and_chain_whose_key_matches(tmp_path: Path) -> None:
    worker, ca = Worker("m1", tmp_path), TestCA()
    cert = enroll(worker, ca, reenroll_job())

    installed, completed = worker.run(add_job(cert, ca))

    store = tmp_path / "certs" / "user-client"
    crt, key, chain = (store / f"user-client-alice{s}" for s in (".crt", ".key", ".chain.pem"))
    assert cert_and_key_match(crt, key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert x509.load_pem_x509_certificates(chain.read_bytes()) == [ca.certificate]
    assert not (tmp_path / ".certbus" / "pending" / "req-1.key").exists()
    assert installed.subject == "cert.installed" and installed.target == TARGET  # type: ignore[attr-defined]
    assert completed.result["already_installed"] is False  # type: ignore[attr-defined]


def test_a_repeated_add_re_reports_the_installed_certificate(tmp_path: Path) -> None:
    worker, ca = Worker("m1", tmp_path), TestCA()
    cert = enroll(worker, ca, reenroll_job())
    first = worker.run(add_job(cert, ca))
    again = worker.run(add_job(cert, ca))
    assert [e.subject for e in again] == ["cert.installed", "agent.job.completed"]
    assert [e.event_id for e in again] == [e.event_id for e in first]
    assert again[1].result["already_installed"] is True  # type: ignore[attr-defined]


def test_add_without_the_pending_key_fails_clearly(tmp_path: Path) -> None:
    ca = TestCA()
    cert = enroll(Worker("m1", tmp_path / "elsewhere"), ca, reenroll_job())
    (failed,) = Worker("m1", tmp_path).run(add_job(cert, ca))
    assert failed.subject == "agent.job.failed" and failed.code == "key_missing"  # type: ignore[attr-defined]
    assert "req-1" in failed.error and "never sent" in failed.error  # type: ignore[attr-defined]


def test_remove_deletes_the_files_only_for_the_installed_serial(tmp_path: Path) -> None:
    worker, ca = Worker("m1", tmp_path), TestCA()
    cert = enroll(worker, ca, reenroll_job())
    worker.run(add_job(cert, ca))
    remove = add_job(cert, ca).model_copy(update={"job_id": "rm-1", "kind": JobKind.REMOVE})

    wrong = remove.model_copy(update={"job_id": "rm-0", "serial": "1234"})
    not_found, _ = worker.run(wrong)
    assert not_found.found is False  # type: ignore[attr-defined]
    assert (tmp_path / "certs" / "user-client" / "user-client-alice.crt").exists()

    removed, completed = worker.run(remove)
    assert removed.subject == "cert.removed" and removed.found is True  # type: ignore[attr-defined]
    assert list((tmp_path / "certs" / "user-client").iterdir()) == []
    assert completed.subject == "agent.job.completed"


def test_a_store_path_outside_the_root_is_refused(tmp_path: Path) -> None:
    job = reenroll_job().model_copy(update={"kind": JobKind.REMOVE, "serial": "1"})
    job.target = StoreTarget(machine="m1", store_path="../../etc", alias="passwd")
    (failed,) = Worker("m1", tmp_path).run(job)
    assert failed.code == "path_outside_root"  # type: ignore[attr-defined]


def test_the_configured_command_runs_after_an_install_with_the_store_in_its_environment(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "reloaded"
    hook = post_install(f'echo "$CERTBUS_ALIAS $CERTBUS_SERIAL" > {marker}', timeout=10)
    worker, ca = Worker("m1", tmp_path / "root", after_install=hook), TestCA()
    cert = enroll(worker, ca, reenroll_job())
    worker.run(add_job(cert, ca))
    assert marker.read_text().split() == [
        "user-client-alice",
        pki.render_serial(cert.serial_number),
    ]


def installed_with(tmp_path: Path, command: str, timeout: float = 10) -> tuple[list[Any], Path]:
    """Enroll and install with a post-install command; the events and the store directory."""
    worker = Worker("m1", tmp_path / "root", after_install=post_install(command, timeout))
    ca = TestCA()
    cert = enroll(worker, ca, reenroll_job())
    return worker.run(add_job(cert, ca)), tmp_path / "root" / "certs" / "user-client"


def test_an_add_job_whose_certificate_is_not_a_pem_fails_as_invalid_certificate(
    tmp_path: Path,
) -> None:
    worker, ca = Worker("m1", tmp_path), TestCA()
    job = add_job(enroll(worker, ca, reenroll_job()), ca)
    broken = job.model_copy(update={"certificate_pem": "-----BEGIN CERTIFICATE-----\nnot base64"})

    (failed,) = worker.run(broken)

    assert failed.subject == "agent.job.failed" and failed.code == "invalid_certificate"  # type: ignore[attr-defined]
    assert failed.error.startswith("certificate_pem is not a certificate: ")  # type: ignore[attr-defined]
    assert failed.event_id == derived_id(job.job_id, "agent.job.failed")
    assert (tmp_path / ".certbus" / "pending" / "req-1.key").exists()


def test_a_chain_certificate_that_does_not_parse_is_named_in_the_failure(tmp_path: Path) -> None:
    worker, ca = Worker("m1", tmp_path), TestCA()
    job = add_job(enroll(worker, ca, reenroll_job()), ca)
    (failed,) = worker.run(job.model_copy(update={"chain_pem": [job.chain_pem[0], "garbage"]}))
    assert failed.code == "invalid_certificate" and "chain_pem[1]" in failed.error  # type: ignore[attr-defined]


def test_an_unexpected_exception_is_answered_as_internal_error_and_logged_with_its_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_issuer(request: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("pkcs12_b64")

    worker = Worker("m1", tmp_path, server_enroll=broken_issuer)
    job = reenroll_job(payload={"key_generation": "server"})

    with caplog.at_level(logging.ERROR, logger="certbus.agent"):
        (failed,) = worker.run(job)

    assert failed.subject == "agent.job.failed" and failed.code == "internal_error"  # type: ignore[attr-defined]
    assert "KeyError: 'pkcs12_b64'" in failed.error  # type: ignore[attr-defined]
    (record,) = [r for r in caplog.records if job.job_id in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_a_java_keystore_that_cannot_be_read_fails_the_job_as_store_unreadable(
    tmp_path: Path,
) -> None:
    (tmp_path / "stores").mkdir()
    (tmp_path / "stores" / "app.jks").write_bytes(b"this is not a keystore" * 4)
    target = StoreTarget(machine="m1", store_type="jks", store_path="stores/app.jks", alias="-")
    job = AgentJob(job_id="inv-1", machine="m1", kind=JobKind.INVENTORY, target=target)

    (failed,) = Worker("m1", tmp_path).run(job)

    assert failed.code == "store_unreadable" and "magic number" in failed.error  # type: ignore[attr-defined]


def test_a_failure_that_may_pass_leaves_the_job_unanswered_so_it_is_delivered_again(
    tmp_path: Path,
) -> None:
    def issuer_away(request: dict[str, Any]) -> dict[str, Any]:
        raise RetryLater("unavailable: issuer is not reachable")

    worker = Worker("m1", tmp_path, server_enroll=issuer_away)
    with pytest.raises(RetryLater):
        worker.run(reenroll_job(payload={"key_generation": "server"}))


def test_the_post_install_outcome_is_in_the_job_result(tmp_path: Path) -> None:
    (_, completed), _ = installed_with(tmp_path, "true")
    assert completed.result["post_install"] == {
        "command": "true", "exit_code": 0, "stderr_tail": "", "timed_out": False,
    }  # fmt: skip


def test_a_failing_post_install_command_is_reported_and_logged_but_the_install_stands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="certbus.agent"):
        (installed, completed), store = installed_with(
            tmp_path, "echo 'nginx: configuration test failed' >&2; exit 3"
        )

    assert installed.subject == "cert.installed" and completed.subject == "agent.job.completed"
    assert (store / "user-client-alice.crt").exists()
    outcome = completed.result["post_install"]  # type: ignore[attr-defined]
    assert (outcome["exit_code"], outcome["timed_out"]) == (3, False)
    assert outcome["stderr_tail"] == "nginx: configuration test failed\n"
    assert any("exit code 3" in r.getMessage() for r in caplog.records)


def test_only_the_end_of_a_long_stderr_goes_into_the_result(tmp_path: Path) -> None:
    command = "head -c 100000 /dev/zero | tr '\\0' x >&2; echo the-end >&2; exit 1"
    (_, completed), _ = installed_with(tmp_path, command)
    tail = completed.result["post_install"]["stderr_tail"]  # type: ignore[attr-defined]
    assert len(tail) == STDERR_TAIL and tail.endswith("xthe-end\n")


def test_a_post_install_command_that_hangs_is_killed_and_reported_as_timed_out(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    (installed, completed), store = installed_with(
        tmp_path, "echo reloading >&2; sleep 30; echo never", timeout=0.5
    )

    assert time.monotonic() - started < 10
    assert installed.subject == "cert.installed" and (store / "user-client-alice.crt").exists()
    outcome = completed.result["post_install"]  # type: ignore[attr-defined]
    assert outcome["timed_out"] is True and outcome["exit_code"] is None
    assert outcome["stderr_tail"] == "reloading\n"


def test_a_post_install_hook_that_raises_does_not_undo_the_install(tmp_path: Path) -> None:
    def hook(job: AgentJob, store_path: Path) -> dict[str, Any]:
        raise RuntimeError("reload script missing")

    worker, ca = Worker("m1", tmp_path, after_install=hook), TestCA()
    cert = enroll(worker, ca, reenroll_job())
    installed, completed = worker.run(add_job(cert, ca))
    assert installed.subject == "cert.installed"
    assert completed.result["post_install"] == {"error": "RuntimeError: reload script missing"}  # type: ignore[attr-defined]
