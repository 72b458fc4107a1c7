"""The AsyncAPI documents are generated from the running code and describe the contract."""

from __future__ import annotations

import json

import pytest
import yaml

from services import asyncapi
from services.notifier.app import SUBJECTS as NOTIFIER_SUBJECTS
from shared import subjects


def _addresses(doc: dict, suffix: str = "") -> set[str]:
    return {
        ch["address"] for name, ch in doc["channels"].items() if name.endswith(suffix) or not suffix
    }


def _resolve(doc: dict, ref: str) -> dict:
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


@pytest.fixture(scope="module")
def documents() -> dict[str, dict]:
    return {service: asyncapi.document(service) for service in ("metadata", "notifier")}


def test_the_metadata_document_lists_its_subscriptions_and_rpc_operations(documents) -> None:
    doc = documents["metadata"]
    assert doc["asyncapi"].startswith("3.") and doc["info"]["title"] == "certbus metadata"
    addresses = _addresses(doc)
    assert {subjects.CERT_ISSUED, subjects.USER_OFFBOARDED} <= addresses
    for op in ("get", "set", "compare", "history", subjects.RPC_PING):
        assert subjects.rpc("metadata", op) in addresses
    assert subjects.CERT_METADATA_CHANGED in _addresses(doc, ":publish")


def test_consumed_events_are_documented_with_their_catalog_schema(documents) -> None:
    doc = documents["notifier"]
    for name, channel in doc["channels"].items():
        if channel["address"] not in NOTIFIER_SUBJECTS:
            continue
        [message_ref] = channel["messages"].values()
        message = _resolve(doc, message_ref["$ref"])
        payload = _resolve(doc, message["payload"]["$ref"])
        assert {"event_id", "correlation_id", "occurred_at"} <= set(payload["properties"]), name
    assert (
        _resolve(doc, "#/components/schemas/CertIssued")["properties"]["serial"]["type"] == "string"
    )
    assert "StoreTarget" in doc["components"]["schemas"]


def test_every_reference_in_a_document_resolves(documents) -> None:
    for doc in documents.values():
        text = json.dumps(doc)
        for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
            _resolve(doc, ref)


def test_make_docs_writes_a_json_and_a_yaml_document_per_service(tmp_path) -> None:
    # The issuer is left out only to keep the test fast: building it makes a CA hierarchy.
    services = ("inventory", "agent")
    written = asyncapi.write_all(tmp_path, services)
    assert {p.name for p in written} == {f"{s}.{ext}" for s in services for ext in ("json", "yaml")}
    inventory = yaml.safe_load((tmp_path / "inventory.yaml").read_text())
    assert subjects.USER_ONBOARDED in _addresses(inventory)
    assert subjects.CERT_REQUESTED in _addresses(inventory, ":publish")
    assert json.loads((tmp_path / "agent.json").read_text())["info"]["title"] == "certbus agent"
    assert set(asyncapi.DOCUMENTED) >= {"issuer", "revocation", "inventory", "metadata", "notifier"}


def test_the_agent_document_says_a_large_job_result_comes_in_parts() -> None:
    doc = asyncapi.document("agent")
    assert subjects.AGENT_JOB_COMPLETED in _addresses(doc, ":publish")
    completed = _resolve(doc, "#/components/schemas/AgentJobCompleted")
    assert {"part", "parts", "result_sha256"} <= set(completed["properties"])
    assert "parts" in completed["description"]
