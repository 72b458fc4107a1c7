"""The HR webhook and health endpoint against a real nats-server."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import build
from services.gateway.settings import GatewaySettings
from tests.e2e.harness import read_subject

pytestmark = pytest.mark.integration


@pytest.fixture
def client(nats_url: str):
    with TestClient(build(GatewaySettings(nats_url=nats_url, rpc_timeout=1.0))) as c:
        yield c


def test_a_valid_hr_event_is_stored_on_the_bus_before_the_webhook_answers(
    client: TestClient, nats_url: str
) -> None:
    r = client.post(
        "/v1/hr/events",
        json={
            "type": "user.onboarded",
            "user": "dana",
            "email": "dana@example.com",
            "devices": ["d1"],
        },
    )
    assert r.status_code == 202
    body = r.json()
    stored = read_subject(nats_url, "user.onboarded")
    assert [(e["event_id"], e["user"], e["devices"]) for e in stored] == [
        (body["event_id"], "dana", ["d1"])
    ]
    assert stored[0]["actor"] == "hr-webhook"


def test_the_same_event_id_posted_twice_is_stored_once(client: TestClient, nats_url: str) -> None:
    event = {"type": "user.offboarded", "user": "erin", "event_id": "hr-42"}
    assert client.post("/v1/hr/events", json=event).status_code == 202
    assert client.post("/v1/hr/events", json=event).status_code == 202
    assert len(read_subject(nats_url, "user.offboarded")) == 1


@pytest.mark.parametrize(
    ("body", "code", "where"),
    [
        ({"type": "user.onboarded", "email": "x@example.com"}, "validation_error", "user"),
        ({"type": "user.onboarded", "user": "", "devices": []}, "validation_error", "user"),
        ({"type": "user.offboarded", "user": "x", "mode": "explode"}, "validation_error", "mode"),
        ({"type": "user.exploded", "user": "x"}, "unknown_event_type", "type"),
        ({"user": "x"}, "unknown_event_type", "type"),
    ],
)
def test_an_invalid_hr_event_is_answered_422_with_a_code_and_nothing_is_published(
    client: TestClient, nats_url: str, body: dict, code: str, where: str
) -> None:
    r = client.post("/v1/hr/events", json=body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == code
    assert where in error["message"]
    assert read_subject(nats_url, "user.>", idle=0.3) == []


def test_health_reports_services_that_do_not_answer(client: TestClient) -> None:
    r = client.get("/v1/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded"
    assert set(body["services"]) == {"issuer", "revocation", "inventory", "metadata", "notifier"}
    assert not any(s["ok"] for s in body["services"].values())
