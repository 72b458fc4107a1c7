"""AsyncAPI documents of every service, generated from the handlers that really run.

    python -m services.asyncapi var/asyncapi        # one <service>.json and .yaml each
    faststream docs gen services.asyncapi:metadata  # FastStream's own CLI, one service

Each service is built exactly as its composition root builds it (nothing connects), in a
throwaway directory so that building the issuer's CAs leaves nothing behind. Messages a
service consumes are documented with the catalog model of their subject; what it publishes
(through its outbox, which FastStream cannot see) is declared here from services/README.md.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from faststream import FastStream

from shared import subjects
from shared.events import CATALOG, Event, model_for

DOCUMENTED = ("issuer", "revocation", "inventory", "metadata", "notifier", "agent")
EXAMPLE_MACHINE = "example-host"

PUBLISHES: dict[str, tuple[str, ...]] = {
    "issuer": (
        subjects.CERT_ISSUED,
        subjects.CERT_REJECTED,
        subjects.CERT_RENEWED,
        subjects.CA_CREATED,
        subjects.CRL_PUBLISHED,
    ),
    "revocation": (subjects.CERT_REVOKED, subjects.CERT_RELEASED),
    "inventory": (
        subjects.CERT_REQUESTED,
        subjects.CERT_REVOCATION_REQUESTED,
        subjects.AGENT_JOBS_WILDCARD,
        subjects.USER_OFFBOARDING_COMPLETED,
    ),
    "metadata": (subjects.CERT_METADATA_CHANGED,),
    "notifier": (subjects.NOTIFICATION_SENT, subjects.NOTIFICATION_FAILED),
    "agent": (
        subjects.CERT_REQUESTED,
        subjects.CERT_INSTALLED,
        subjects.CERT_REMOVED,
        subjects.AGENT_JOB_COMPLETED,
        subjects.AGENT_JOB_FAILED,
        subjects.AGENT_HEARTBEAT,
    ),
}

_scratch: tempfile.TemporaryDirectory[str] | None = None


def _scratch_dir() -> str:
    global _scratch
    if _scratch is None:
        _scratch = tempfile.TemporaryDirectory(prefix="certbus-asyncapi-")
    return _scratch.name


def app_for(service: str) -> FastStream:
    """The service's FastStream application, with its publications declared for the docs."""
    scratch = {
        "CERTBUS_VAR_DIR": _scratch_dir(),
        "CERTBUS_MACHINE": EXAMPLE_MACHINE,
        "CERTBUS_ROOT": str(Path(_scratch_dir()) / "agent"),
    }
    with _environment(scratch):
        runtime = importlib.import_module(f"services.{service}.app").build()
    for subject in PUBLISHES.get(service, ()):
        model = CATALOG[subject]
        runtime.broker.publisher(
            subject,
            title=f"{service}:{subject}:publish",
            description=(model.__doc__ or "").strip() or None,
            schema=model,
        )
    return runtime.app


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def document(service: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of one service, consumed payloads typed from the catalog."""
    spec = json.loads(app_for(service).schema.to_specification().to_json())
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for channel in spec.get("channels", {}).values():
        model = _consumed_model(channel.get("address", ""))
        if model is None:
            continue
        for ref in channel.get("messages", {}).values():
            message = components.get("messages", {}).get(ref["$ref"].rsplit("/", 1)[-1])
            if message is not None:
                old = message.get("payload", {}).get("$ref", "")
                schemas.pop(old.rsplit("/", 1)[-1], None)
                schemas.update(_schemas(model))
                message["payload"] = {"$ref": f"#/components/schemas/{model.__name__}"}
                message["title"] = model.__name__
    return spec


def _consumed_model(address: str) -> type[Event] | None:
    if address.startswith(f"{subjects.RPC_PREFIX}."):
        return None
    try:
        return model_for(address)
    except LookupError:
        return None


def _schemas(model: type[Event]) -> dict[str, Any]:
    """The model's JSON schema and those it refers to, keyed by name."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    nested = schema.pop("$defs", {})
    return {**nested, model.__name__: schema}


def write_all(out_dir: Path, services: tuple[str, ...] = DOCUMENTED) -> list[Path]:
    import yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for service in services:
        doc = document(service)
        for suffix, text in (
            ("json", json.dumps(doc, indent=2, sort_keys=False)),
            ("yaml", yaml.safe_dump(doc, sort_keys=False)),
        ):
            path = out_dir / f"{service}.{suffix}"
            path.write_text(text + "\n")
            written.append(path)
    return written


def __getattr__(name: str) -> FastStream:
    # ``faststream docs gen services.asyncapi:<service>`` builds only the service it asks for.
    if name in DOCUMENTED:
        return app_for(name)
    raise AttributeError(name)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "var/asyncapi")
    for path in write_all(target):
        print(path)
