"""Every store type can create itself, add, list and remove, readable by independent tools."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from services.agent.worker import Worker
from shared import pki
from shared.events import AgentJob, JobKind, StoreTarget
from tests.inventory_kit import TestCA, cert_and_key_match

PASSWORD = "changeit"


def job(kind: JobKind, target: StoreTarget, **fields: object) -> AgentJob:
    return AgentJob(
        job_id=f"{kind.value}-{target.alias}-{fields.get('request_id', '')}",
        machine="m1",
        kind=kind,
        target=target,
        **fields,
    )  # type: ignore[arg-type]


def install(worker: Worker, ca: TestCA, target: StoreTarget, request_id: str) -> x509.Certificate:
    requested, _ = worker.run(
        job(
            JobKind.REENROLL,
            target,
            request_id=request_id,
            template="t",
            subject_dn=f"CN={request_id}",
        )
    )
    cert = ca.sign(x509.load_pem_x509_csr(requested.csr_pem.encode()))  # type: ignore[attr-defined]
    outcome = worker.run(
        job(
            JobKind.ADD,
            target,
            request_id=request_id,
            cert_id=request_id,
            certificate_pem=pki.pem(cert),
            chain_pem=[pki.pem(ca.certificate)],
        )
    )
    assert outcome[-1].subject == "agent.job.completed", outcome
    return cert


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize(
    "store_type, store_path",
    [("pem", "certs/web"), ("pkcs12", "certs/web.p12"), ("jks", "certs/web.jks")],
)
def test_each_store_type_is_created_filled_inventoried_and_emptied(
    tmp_path: Path, store_type: str, store_path: str
) -> None:
    worker, ca = Worker("m1", tmp_path, store_password=PASSWORD), TestCA()
    target = StoreTarget(machine="m1", store_type=store_type, store_path=store_path, alias="web")
    created = worker.run(job(JobKind.CREATE, target))
    assert created[-1].result["created"] is True  # type: ignore[attr-defined]

    cert = install(worker, ca, target, "r1")

    (report,) = worker.run(job(JobKind.INVENTORY, target))
    (entry,) = report.result["entries"]  # type: ignore[attr-defined]
    assert entry["alias"] == "web" and entry["has_key"] is True
    assert entry["serial"] == pki.render_serial(cert.serial_number)
    assert entry["thumbprint_sha256"] == pki.thumbprint(cert)

    removed, _ = worker.run(job(JobKind.REMOVE, target, serial=entry["serial"]))
    assert removed.found is True  # type: ignore[attr-defined]
    (after,) = worker.run(job(JobKind.INVENTORY, target).model_copy(update={"job_id": "again"}))
    assert after.result["entries"] == []  # type: ignore[attr-defined]


def test_a_pkcs12_store_is_readable_by_openssl_with_the_matching_key(tmp_path: Path) -> None:
    worker, ca = Worker("m1", tmp_path, store_password=PASSWORD), TestCA()
    target = StoreTarget(
        machine="m1", store_type="pkcs12", store_path="vpn/alice.p12", alias="vpn-alice"
    )
    install(worker, ca, target, "r2")
    p12 = tmp_path / "vpn" / "alice.p12"
    assert stat.S_IMODE(p12.stat().st_mode) == 0o600
    dumped = openssl("pkcs12", "-in", str(p12), "-passin", f"pass:{PASSWORD}", "-nodes")
    (tmp_path / "cert.pem").write_text(dumped[dumped.index("-----BEGIN CERTIFICATE") :])
    key_start = dumped.index("-----BEGIN PRIVATE KEY")
    key_end = dumped.index("-----END PRIVATE KEY-----") + len("-----END PRIVATE KEY-----")
    (tmp_path / "key.pem").write_text(dumped[key_start:key_end] + "\n")
    assert "friendlyName: vpn-alice" in dumped
    assert cert_and_key_match(tmp_path / "cert.pem", tmp_path / "key.pem")


def test_a_java_keystore_is_listed_by_keytool(tmp_path: Path) -> None:
    worker, ca = Worker("m1", tmp_path, store_password=PASSWORD), TestCA()
    target = StoreTarget(
        machine="m1", store_type="jks", store_path="app/keystore.jks", alias="app-tls"
    )
    cert = install(worker, ca, target, "r3")
    listing = subprocess.run(
        [
            "keytool",
            "-list",
            "-v",
            "-keystore",
            str(tmp_path / "app" / "keystore.jks"),
            "-storepass",
            PASSWORD,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "Alias name: app-tls" in listing and "PrivateKeyEntry" in listing
    assert pki.thumbprint(cert).upper() in listing.replace(":", "")


def test_discovery_finds_pem_directories_and_key_stores(tmp_path: Path) -> None:
    worker, ca = Worker("m1", tmp_path, store_password=PASSWORD), TestCA()
    for store_type, path in (
        ("pem", "etc/ssl/site"),
        ("pkcs12", "opt/a.p12"),
        ("jks", "opt/java/trust.jks"),
    ):
        install(
            worker,
            ca,
            StoreTarget(machine="m1", store_type=store_type, store_path=path, alias="x"),
            f"r-{store_type}",
        )  # type: ignore[arg-type]
    (tmp_path / "etc" / "notes.txt").write_text("not a certificate")

    (report,) = worker.run(
        AgentJob(
            job_id="disc", machine="m1", kind=JobKind.DISCOVER, payload={"paths": ["etc", "opt"]}
        )
    )
    stores = {(s["store_type"], s["store_path"]): s for s in report.result["stores"]}  # type: ignore[attr-defined]
    assert set(stores) == {
        ("pem", "etc/ssl/site"),
        ("pkcs12", "opt/a.p12"),
        ("jks", "opt/java/trust.jks"),
    }
    assert all(s["entries"] == 1 and s["readable"] and s["manageable"] for s in stores.values())


NAMED = StoreTarget(
    machine="m1", store_path="etc/nginx/tls", alias="web",
    cert_file="server.pem", key_file="server-key.pem", chain_file="ca.crt",
)  # fmt: skip


def test_a_pem_target_that_names_its_files_gets_them_and_later_jobs_find_them(
    tmp_path: Path,
) -> None:
    worker, ca = Worker("m1", tmp_path), TestCA()
    cert = install(worker, ca, NAMED, "named-1")
    store = tmp_path / "etc" / "nginx" / "tls"
    assert sorted(p.name for p in store.iterdir()) == ["ca.crt", "server-key.pem", "server.pem"]
    assert cert_and_key_match(store / "server.pem", store / "server-key.pem")
    assert stat.S_IMODE((store / "server-key.pem").stat().st_mode) == 0o600
    assert x509.load_pem_x509_certificate((store / "ca.crt").read_bytes()) == ca.certificate

    # Inventory and removal name only the store and the alias, as inventory's jobs do.
    whole_store = NAMED.model_copy(update={"alias": "-"})
    plain = StoreTarget(machine="m1", store_path="etc/nginx/tls", alias="web")
    (report,) = worker.run(job(JobKind.INVENTORY, whole_store))
    entries = report.result["entries"]  # type: ignore[attr-defined]
    assert [(e["alias"], e["serial"]) for e in entries] == [
        ("web", pki.render_serial(cert.serial_number))
    ]  # the chain file "ca.crt" is no entry
    removed, _ = worker.run(
        job(JobKind.REMOVE, plain, serial=pki.render_serial(cert.serial_number))
    )
    assert removed.found is True  # type: ignore[attr-defined]
    assert list(store.iterdir()) == []


def test_an_alias_installed_again_under_other_names_leaves_no_old_copy(tmp_path: Path) -> None:
    worker, ca = Worker("m1", tmp_path), TestCA()
    install(worker, ca, NAMED, "named-2")
    renamed = NAMED.model_copy(update={"cert_file": "tls.crt", "key_file": "tls.key",
                                       "chain_file": "tls-chain.pem"})  # fmt: skip
    install(worker, ca, renamed, "named-3")
    store = tmp_path / "etc" / "nginx" / "tls"
    assert sorted(p.name for p in store.iterdir()) == ["tls-chain.pem", "tls.crt", "tls.key"]


@pytest.mark.parametrize(
    "names, complaint",
    [
        ({"cert_file": "../outside.crt"}, "path"),
        ({"key_file": "sub/dir.key"}, "path"),
        ({"chain_file": ".."}, "not a file name"),
        ({"cert_file": ".hidden"}, "hidden"),
        ({"cert_file": "same.pem", "key_file": "same.pem"}, "must differ"),
    ],
)
def test_a_target_naming_files_outside_its_directory_fails_the_install(
    tmp_path: Path, names: dict[str, str], complaint: str
) -> None:
    worker, ca = Worker("m1", tmp_path), TestCA()
    target = StoreTarget(machine="m1", store_path="tls", alias="web", **names)
    requested, _ = worker.run(job(JobKind.REENROLL, target, request_id="bad", template="t",
                                  subject_dn="CN=bad"))  # fmt: skip
    cert = ca.sign(x509.load_pem_x509_csr(requested.csr_pem.encode()))  # type: ignore[attr-defined]
    (failed,) = worker.run(
        job(JobKind.ADD, target, request_id="bad", certificate_pem=pki.pem(cert))
    )
    assert failed.subject == "agent.job.failed"
    assert failed.code == "invalid_file_name" and complaint in failed.error  # type: ignore[attr-defined]
    assert not (tmp_path / "outside.crt").exists() and not (tmp_path / "tls").exists()
