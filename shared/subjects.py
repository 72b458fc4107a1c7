"""The one catalog of subject names and JetStream streams.

No other module writes a subject literal: services import the names from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

USER_ONBOARDED = "user.onboarded"
USER_UPDATED = "user.updated"
USER_OFFBOARDED = "user.offboarded"
USER_OFFBOARDING_COMPLETED = "user.offboarding.completed"
DEVICE_ASSIGNED = "device.assigned"
DEVICE_UNASSIGNED = "device.unassigned"
DEVICE_DECOMMISSIONED = "device.decommissioned"

CERT_REQUESTED = "cert.requested"
CERT_ISSUED = "cert.issued"
CERT_REJECTED = "cert.rejected"
CERT_INSTALLED = "cert.installed"
CERT_REMOVED = "cert.removed"
CERT_REVOCATION_REQUESTED = "cert.revocation.requested"
CERT_REVOKED = "cert.revoked"
CERT_RELEASED = "cert.released"
CERT_RENEWAL_REQUESTED = "cert.renewal.requested"
CERT_RENEWED = "cert.renewed"
CERT_EXPIRING = "cert.expiring"
CERT_METADATA_CHANGED = "cert.metadata.changed"
CERT_DRIFT_DETECTED = "cert.drift.detected"
KEY_COMPROMISED = "key.compromised"

CA_CREATED = "ca.created"
CA_COMPROMISED = "ca.compromised"
CRL_PUBLISHED = "crl.published"

AGENT_JOBS_PREFIX = "agent"
AGENT_JOBS_WILDCARD = "agent.*.jobs"
AGENT_JOB_COMPLETED = "agent.job.completed"
AGENT_JOB_FAILED = "agent.job.failed"
AGENT_HEARTBEAT = "agent.heartbeat"

NOTIFICATION_SENT = "notification.sent"
NOTIFICATION_FAILED = "notification.failed"

DEAD_LETTER_PREFIX = "deadletter"

RPC_PREFIX = "rpc"

OBJECT_BUCKET_CRLS = "certbus-crls"


@dataclass(frozen=True)
class StreamDef:
    name: str
    subjects: tuple[str, ...]


STREAMS: tuple[StreamDef, ...] = (
    StreamDef("HR", ("user.>", "device.>", "key.>")),
    StreamDef("CERT", ("cert.>",)),
    StreamDef("PKI", ("ca.>", "crl.>")),
    StreamDef("AGENT", ("agent.>",)),
    StreamDef("NOTIFY", ("notification.>",)),
    StreamDef("DLQ", ("deadletter.>",)),
)

DUPLICATE_WINDOW_SECONDS = 10 * 60.0

_TOKEN_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def stream_for(subject: str) -> str:
    """Name the stream that stores ``subject``."""
    head = subject.split(".", 1)[0]
    for stream in STREAMS:
        for pattern in stream.subjects:
            if pattern.split(".", 1)[0] == head:
                return stream.name
    raise LookupError(f"no stream stores subject {subject!r}")


def subject_token(value: str) -> str:
    """Encode any name (a host name with dots, say) as one NATS subject token.

    The encoding is reversible and yields only characters valid in subjects and durable names.
    """
    return _TOKEN_SAFE.sub(
        lambda m: "_" + format(ord(m.group(0)), "x") + "_", value.replace("_", "__")
    )


def agent_jobs(machine: str) -> str:
    """The subject carrying jobs for the agent on ``machine``."""
    return f"{AGENT_JOBS_PREFIX}.{subject_token(machine)}.jobs"


def rpc(service: str, operation: str) -> str:
    """The request/reply subject of one synchronous operation."""
    return f"{RPC_PREFIX}.{service}.{operation}"


def dead_letter(subject: str) -> str:
    """Where a message that exhausted its deliveries on ``subject`` is parked."""
    return f"{DEAD_LETTER_PREFIX}.{subject}"


def durable_name(service: str, subject: str) -> str:
    """One durable consumer per (service, subject); durable names cannot contain dots."""
    return subject_token(
        f"{service}-{subject.replace('.', '-').replace('*', 'any').replace('>', 'all')}"
    )


RPC_PING = "ping"
SERVICES = ("issuer", "revocation", "inventory", "metadata", "notifier")
