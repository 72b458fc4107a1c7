"""CAs, templates and enrollment through the Web API, the SDK and the CLI.

A real nats-server, the issuer runtime in its own thread, and the gateway under uvicorn.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from typer.testing import CliRunner

from services.cli.main import app as cli
from services.cli.sdk import Certbus, CertbusError
from services.gateway.app import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.issuer.app import build as build_issuer
from services.issuer.testing import csr_pem, issuer_settings, make_csr, make_key, user_csr
from shared.pki import load_certificate
from tests.e2e.harness import read_subject

pytestmark = pytest.mark.integration


class Background:
    """An asyncio service running in a thread of its own until stopped."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.runtime.app.start(), self.loop).result(60)
        return self.runtime

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runtime.app.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gateway_url(nats_url: str, tmp_path: Path, monkeypatch):
    settings = issuer_settings(tmp_path, nats_url, issuer_cas=["issuing-ec", "issuing-mldsa"])
    with Background(build_issuer(settings)):
        port = free_port()
        app = build_gateway(GatewaySettings(nats_url=nats_url, rpc_timeout=10.0))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("CERTBUS_URL", url)
        yield url
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def cb(gateway_url: str):
    with Certbus(gateway_url) as client:
        yield client


def test_cas_are_listed_with_their_chains_and_the_chain_downloads_as_pem(cb: Certbus) -> None:
    cas = {ca["name"]: ca for ca in cb.cas.list()}
    assert {"root", "issuing-ec", "root-pq", "issuing-mldsa"} <= set(cas)
    assert cas["issuing-ec"]["parent"] == "root" and cas["issuing-mldsa"]["key_type"] == "ml-dsa-65"
    pem = cb.cas.chain_pem("issuing-ec")
    chain = x509.load_pem_x509_certificates(pem.encode())
    assert [c.subject.rfc4514_string() for c in chain] == [
        cas["issuing-ec"]["subject_dn"],
        cas["root"]["subject_dn"],
    ]
    with pytest.raises(CertbusError) as missing:
        cb.cas.get("nope")
    assert missing.value.status == 404


def test_templates_are_listed_with_their_rules(cb: Certbus) -> None:
    templates = {t["name"]: t for t in cb.templates.list()}
    assert {"user-client", "tls-server", "machine-client", "code-signing", "tls-server-pq"} <= set(
        templates
    )
    assert templates["user-client"]["extended_key_usage"] == ["client_auth"]
    assert templates["tls-server"]["sans"]["dns_suffixes"]


def test_csr_enrollment_returns_the_certificate_and_a_repeat_returns_the_same_one(
    cb: Certbus,
) -> None:
    first = cb.enroll.csr("user-client", user_csr("alice"), owner="alice", request_id="api-1")
    again = cb.enroll.csr("user-client", user_csr("alice"), owner="alice", request_id="api-1")
    assert first["id"] == again["id"] and first["serial"] == again["serial"]
    cert = load_certificate(first["certificate_pem"])
    assert format(cert.serial_number, "x") == first["serial"]
    assert {
        "thumbprint_sha1",
        "thumbprint_sha256",
        "chain_pem",
        "not_before",
        "not_after",
        "template",
        "owner",
    } <= set(first)


def test_a_policy_violation_is_answered_4xx_with_code_and_message(cb: Certbus) -> None:
    weak, _ = make_csr("alice", [x509.RFC822Name("alice@example.com")], key=make_key("rsa-1024"))
    with pytest.raises(CertbusError) as caught:
        cb.enroll.csr("user-client", csr_pem(weak), owner="alice")
    assert caught.value.status == 422 and caught.value.code == "key_too_weak"
    assert "rsa_min_bits" in caught.value.message


def test_pfx_enrollment_returns_a_modern_pkcs12_with_the_chain(cb: Certbus, tmp_path: Path) -> None:
    answer = cb.enroll.pfx(
        "tls-server",
        "CN=www.example.com",
        sans=["dns:www.example.com"],
        password="correct horse battery",
    )
    blob = base64.b64decode(answer["pkcs12_b64"])
    loaded = pkcs12.load_pkcs12(blob, b"correct horse battery")
    assert loaded.cert.certificate.serial_number == int(answer["serial"], 16)
    assert loaded.cert.friendly_name == b"CN=www.example.com"
    assert len(loaded.additional_certs) == 2 and loaded.key is not None
    (tmp_path / "out.p12").write_bytes(blob)
    info = subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-info",
            "-noout",
            "-in",
            "out.p12",
            "-passin",
            "pass:correct horse battery",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert info.returncode == 0, info.stderr
    assert "AES-256-CBC" in info.stderr and "sha256" in info.stderr.lower()


def test_neither_the_pfx_password_nor_its_key_is_stored_or_published(
    cb: Certbus, nats_url: str, tmp_path: Path
) -> None:
    password = "never-stored-" + "x" * 12
    answer = cb.enroll.pfx(
        "tls-server", "CN=secret.example.com", sans=["dns:secret.example.com"], password=password
    )
    key = pkcs12.load_pkcs12(base64.b64decode(answer["pkcs12_b64"]), password.encode()).key
    key_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_b64 = base64.b64encode(key_der).decode()
    for _ in range(20):  # the outbox relay publishes just after the answer
        published = read_subject(nats_url, "cert.>", idle=0.5)
        if any(e.get("serial") == answer["serial"] for e in published):
            break
    else:
        raise AssertionError("cert.issued was never published")
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("issuer.db*"))
    for haystack in (json.dumps(published), stored.decode(errors="replace")):
        assert password not in haystack and key_b64[:40] not in haystack


def test_renewal_keeps_subject_sans_and_template_with_a_new_key(cb: Certbus) -> None:
    old = cb.enroll.csr("user-client", user_csr("erin"), owner="erin")
    new_csr = user_csr("erin")
    new = cb.enroll.renew(old["id"], csr=new_csr)
    assert new["id"] != old["id"] and new["renewal_of"] == old["id"]
    assert (new["subject_dn"], new["sans"], new["template"]) == (
        old["subject_dn"],
        old["sans"],
        old["template"],
    )
    assert new["public_key_sha256"] != old["public_key_sha256"]


def test_the_cli_lists_enrolls_and_fails_with_the_error_code(
    gateway_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["cas", "list", "--json"])
    assert listed.exit_code == 0 and "issuing-ec" in {c["name"] for c in json.loads(listed.stdout)}
    chain = runner.invoke(cli, ["cas", "chain", "issuing-ec"])
    assert chain.exit_code == 0 and len(x509.load_pem_x509_certificates(chain.stdout.encode())) == 2
    templates = runner.invoke(cli, ["templates", "list", "--json"])
    assert templates.exit_code == 0 and "tls-server" in {
        t["name"] for t in json.loads(templates.stdout)
    }
    (tmp_path / "req.pem").write_text(user_csr("frank"))
    out = tmp_path / "frank.pem"
    ok = runner.invoke(
        cli,
        [
            "enroll",
            "csr",
            "--template",
            "user-client",
            "--csr",
            str(tmp_path / "req.pem"),
            "--owner",
            "frank",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert len(x509.load_pem_x509_certificates(out.read_bytes())) == 3
    p12 = tmp_path / "web.p12"
    made = runner.invoke(
        cli,
        [
            "enroll",
            "pfx",
            "--template",
            "tls-server",
            "--subject",
            "CN=web.example.com",
            "--san",
            "dns:web.example.com",
            "--password",
            "s3cret-pass",
            "--out",
            str(p12),
        ],
    )
    assert made.exit_code == 0, made.output and (p12.stat().st_mode & 0o777) == 0o600
    bad = runner.invoke(
        cli,
        [
            "enroll",
            "pfx",
            "--template",
            "user-client",
            "--subject",
            "CN=x",
            "--password",
            "s3cret-pass",
            "--out",
            str(tmp_path / "x.p12"),
        ],
    )
    assert bad.exit_code != 0 and "key_generation_not_allowed" in bad.stderr
