"""The event contract: one model per subject, lossless JSON, a complete envelope, valid names."""

from __future__ import annotations

import json
import re
import types
import typing
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel

from shared import events, subjects
from shared.events import CATALOG, Event

TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
ENVELOPE = ("event_id", "occurred_at", "correlation_id", "causation_id", "actor", "schema_version")


def event_subjects() -> list[str]:
    """Every subject the catalog module names that carries events (names with a dot in them)."""
    return sorted(
        value
        for name, value in vars(subjects).items()
        if name.isupper() and isinstance(value, str) and "." in value
    )


def event_classes() -> list[type[Event]]:
    return [
        obj
        for obj in vars(events).values()
        if isinstance(obj, type) and issubclass(obj, Event) and obj is not Event
    ]


def concrete(subject: str) -> str:
    return subjects.agent_jobs("host.example.com") if "*" in subject else subject


def sample_value(annotation: Any, name: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return sample_value(next(a for a in args if a is not type(None)), name)
    if origin is typing.Literal:
        return args[0]
    if origin is list:
        return [sample_value(args[0], name)]
    if origin is dict:
        return {"key": sample_value(args[1], name)}
    if annotation is Any:
        return {"nested": [1, "two"]}
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return list(annotation)[-1]
        if issubclass(annotation, bool):
            return True
        if issubclass(annotation, int):
            return 3
        if issubclass(annotation, datetime):
            return datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
        if issubclass(annotation, str):
            return f"{name}-value"
        if issubclass(annotation, BaseModel):
            return annotation(**sample_fields(annotation))
    raise TypeError(f"no sample for {name}: {annotation!r}")


def sample_fields(model: type[BaseModel]) -> dict[str, Any]:
    """A value for every field of ``model``, optional ones included, so nothing goes unchecked."""
    return {
        name: sample_value(info.annotation, name)
        for name, info in model.model_fields.items()
        if name not in ENVELOPE
    }


def sample(model: type[Event]) -> Event:
    return model(**sample_fields(model))


@pytest.mark.parametrize("subject", event_subjects())
def test_every_event_subject_has_exactly_one_model(subject: str) -> None:
    owners = [cls for cls in event_classes() if cls.subject == subject]
    assert len(owners) == 1, f"{subject}: {owners}"
    assert CATALOG[subject] is owners[0]
    assert events.model_for(concrete(subject)) is owners[0]


def test_every_model_in_the_catalog_is_named_in_the_subject_catalog() -> None:
    assert sorted(CATALOG) == event_subjects()
    assert sorted(CATALOG.values(), key=lambda c: c.__name__) == sorted(
        event_classes(), key=lambda c: c.__name__
    )


@pytest.mark.parametrize("model", list(CATALOG.values()), ids=lambda m: m.__name__)
def test_every_model_round_trips_through_json(model: type[Event]) -> None:
    original = sample(model)
    again = model.model_validate_json(original.model_dump_json())
    assert again == original
    assert again.model_dump(mode="json") == original.model_dump(mode="json")


@pytest.mark.parametrize("model", list(CATALOG.values()), ids=lambda m: m.__name__)
def test_unknown_fields_are_tolerated_and_passed_on(model: type[Event]) -> None:
    data = json.loads(sample(model).model_dump_json())
    data["added_in_a_later_version"] = {"deep": [1, 2, {"x": None}]}
    parsed = model.model_validate(data)
    assert json.loads(parsed.model_dump_json())["added_in_a_later_version"] == {
        "deep": [1, 2, {"x": None}]
    }


@pytest.mark.parametrize("model", list(CATALOG.values()), ids=lambda m: m.__name__)
def test_every_model_carries_the_envelope_with_a_utc_time(model: type[Event]) -> None:
    event = sample(model)
    assert set(ENVELOPE) <= set(model.model_fields)
    assert event.occurred_at.utcoffset() is not None
    assert event.occurred_at.utcoffset().total_seconds() == 0
    assert event.correlation_id == event.event_id and event.causation_id is None
    assert event.schema_version >= 1
    dumped = json.loads(event.model_dump_json())
    assert dumped["occurred_at"].endswith("Z") or dumped["occurred_at"].endswith("+00:00")


def test_two_events_never_share_an_id_and_derived_ids_repeat() -> None:
    assert events.CertIssued.model_fields["event_id"].default_factory is not None
    ids = {sample(events.CertRevoked).event_id for _ in range(100)}
    assert len(ids) == 100
    assert events.derived_id("a", "b") == events.derived_id("a", "b") != events.derived_id("ab")


def test_a_caused_event_carries_the_correlation_id_and_names_its_cause() -> None:
    origin = events.UserOffboarded(user="alice", actor="hr-system", correlation_id="hr-123")
    child = origin.caused(events.CertMetadataChanged, cert_id="c1", field="isEnabled", new="false")
    grandchild = child.caused(
        events.NotificationSent,
        channel="webhook:x",
        about_event_id=child.event_id,
        about_subject=child.subject,
    )
    assert child.correlation_id == grandchild.correlation_id == "hr-123"
    assert child.causation_id == origin.event_id and grandchild.causation_id == child.event_id
    assert child.actor == "hr-system"
    assert child.event_id != origin.event_id


@pytest.mark.parametrize("subject", event_subjects())
def test_every_subject_is_stored_by_exactly_one_stream(subject: str) -> None:
    name = subjects.stream_for(concrete(subject))
    matching = [
        s.name for s in subjects.STREAMS if any(_matches(p, concrete(subject)) for p in s.subjects)
    ]
    assert matching == [name]
    assert subjects.stream_for(subjects.dead_letter(concrete(subject))) == "DLQ"


def test_requests_and_replies_are_never_stored() -> None:
    with pytest.raises(LookupError):
        subjects.stream_for(subjects.rpc("metadata", "compare"))


def test_no_two_streams_claim_the_same_subjects() -> None:
    patterns = [p for s in subjects.STREAMS for p in s.subjects]
    heads = [p.split(".", 1)[0] for p in patterns]
    assert len(heads) == len(set(heads))


@pytest.mark.parametrize("service", subjects.SERVICES)
def test_durable_names_are_single_tokens(service: str) -> None:
    names = {subjects.durable_name(service, s) for s in event_subjects()}
    assert len(names) == len(event_subjects())
    for name in names:
        assert "." not in name and TOKEN.match(name), name


@pytest.mark.parametrize(
    "machine", ["laptop-01", "host.example.com", "a_b", "a.b", "a_2e_b", "Ünïcode", "x y/z*>"]
)
def test_an_agent_subject_has_one_valid_token_for_any_machine_name(machine: str) -> None:
    parts = subjects.agent_jobs(machine).split(".")
    assert len(parts) == 3 and parts[0] == "agent" and parts[2] == "jobs"
    assert TOKEN.match(parts[1])
    assert subjects.stream_for(subjects.agent_jobs(machine)) == "AGENT"


def test_different_machine_names_never_share_a_jobs_subject() -> None:
    names = ["a.b", "a_b", "a_2e_b", "a-b", "a__b", "A.b"]
    assert len({subjects.agent_jobs(n) for n in names}) == len(names)


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)
