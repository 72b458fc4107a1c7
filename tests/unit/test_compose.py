"""compose.yaml describes the production shape, with settings the services really read."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ("issuer", "revocation", "inventory", "metadata", "notifier")
NODES = ("nats-1", "nats-2", "nats-3")
SETTINGS = {
    "issuer": "services.issuer.settings:IssuerSettings",
    "revocation": "services.revocation.settings:RevocationSettings",
    "inventory": "services.inventory.settings:InventorySettings",
    "metadata": "services.metadata.settings:MetadataSettings",
    "notifier": "services.notifier.settings:NotifierSettings",
    "gateway": "services.gateway.settings:GatewaySettings",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _flag(command: list[str], name: str) -> str:
    [value] = [c.split("=", 1)[1] for c in command if c.startswith(f"--{name}=")]
    return value


def test_nats_is_a_three_node_jetstream_cluster_with_a_volume_each(compose) -> None:
    services = compose["services"]
    for node in NODES:
        spec = services[node]
        assert spec["image"].startswith("nats:2.10")
        command = spec["command"]
        assert "--jetstream" in command and _flag(command, "server_name") == node
        assert _flag(command, "cluster_name") == "certbus"
        routes = _flag(command, "routes").split(",")
        assert sorted(routes) == [f"nats://{n}:6222" for n in NODES]
        [volume] = spec["volumes"]
        assert volume == f"{node}:{_flag(command, 'store_dir')}" and node in compose["volumes"]


def test_every_service_runs_from_one_image_with_its_own_module(compose) -> None:
    services = compose["services"]
    images = {services[name]["image"] for name in (*WORKERS, "gateway")}
    assert len(images) == 1
    for name in (*WORKERS, "gateway"):
        spec = services[name]
        assert spec["build"] == {"context": ".", "dockerfile": "infra/Dockerfile"}
        assert spec["command"] == ["python", "-m", f"services.{name}"]
        assert (ROOT / "services" / name / "__main__.py").exists()
        assert spec["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_workers_are_replicated_and_the_database_is_postgres_16(compose) -> None:
    services = compose["services"]
    assert all(services[name]["deploy"]["replicas"] > 1 for name in WORKERS)
    assert services["postgres"]["image"] == "postgres:16"


@pytest.mark.parametrize("name", [*WORKERS, "gateway"])
def test_each_service_reads_every_setting_compose_gives_it(compose, name: str) -> None:
    env = compose["services"][name]["environment"]
    module, cls = SETTINGS[name].split(":")
    fields = set(getattr(importlib.import_module(module), cls).model_fields)
    for key in env:
        assert key.startswith("CERTBUS_") and key.removeprefix("CERTBUS_").lower() in fields, key
    assert env["CERTBUS_NATS_URL"].split(",") == [f"nats://{n}:4222" for n in NODES]
    assert env["CERTBUS_STREAM_REPLICAS"] == "3"
    assert env["CERTBUS_DATABASE_URL"].startswith("postgresql://certbus:${POSTGRES_PASSWORD")


def test_no_secret_is_written_into_the_compose_file() -> None:
    text = (ROOT / "compose.yaml").read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|PASSPHRASE|SECRET|TOKEN)\w*:\s", line) and "_FILE" not in line:
            assert "${" in line, line


def test_the_image_is_python_3_11_slim_with_the_package_installed() -> None:
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert "pip install ." in dockerfile and "USER certbus" in dockerfile


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="docker compose is not installed",
)
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={"POSTGRES_PASSWORD": "x", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
