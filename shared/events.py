"""Event models: one pydantic model per subject, each carrying the envelope.

Events are facts in the past tense (``CertIssued``); requests are named for what they ask
(``CertRequested`` is the fact that somebody asked). Unknown fields are kept, so producers can
add fields without breaking older consumers; changing a meaning means a new ``schema_version``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, TypeGuard, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared import subjects
from shared.clock import utcnow
from shared.pki import RevocationReason

E = TypeVar("E", bound="Event")

NAMESPACE = uuid.UUID("6f1d3c2a-9a43-4c59-8c8e-0f6f8c1b5a10")


def new_id() -> str:
    return str(uuid.uuid4())


def derived_id(*parts: str) -> str:
    """A deterministic id: the same inputs always give the same id, so retries deduplicate."""
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


class Event(BaseModel):
    """The envelope every event carries."""

    model_config = ConfigDict(extra="allow", frozen=False)

    subject: ClassVar[str] = ""

    event_id: str = Field(default_factory=new_id)
    occurred_at: datetime = Field(default_factory=utcnow)
    correlation_id: str = ""
    causation_id: str | None = None
    actor: str = "system"
    schema_version: int = 1

    def model_post_init(self, _context: Any) -> None:
        if not self.correlation_id:
            self.correlation_id = self.event_id

    def caused(self, cls: type[E], **fields: Any) -> E:
        """A new event caused by this one: it inherits the correlation id."""
        fields.setdefault("correlation_id", self.correlation_id)
        fields.setdefault("causation_id", self.event_id)
        fields.setdefault("actor", self.actor)
        return cls(**fields)

    def subject_name(self) -> str:
        return self.subject


class UserOnboarded(Event):
    subject: ClassVar[str] = subjects.USER_ONBOARDED
    user: str = Field(min_length=1, max_length=256)
    email: str | None = None
    department: str | None = None
    roles: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)

    @field_validator("devices")
    @classmethod
    def _devices_are_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or len(name) > 253:
                raise ValueError("device names must be 1 to 253 characters")
        return value


class UserUpdated(UserOnboarded):
    subject: ClassVar[str] = subjects.USER_UPDATED


class OffboardingMode(StrEnum):
    REVOKE = "revoke"
    DISABLE = "disable"


class UserOffboarded(Event):
    subject: ClassVar[str] = subjects.USER_OFFBOARDED
    user: str = Field(min_length=1, max_length=256)
    mode: OffboardingMode = OffboardingMode.REVOKE
    effective_at: datetime | None = None
    comment: str | None = None


class UserOffboardingCompleted(Event):
    subject: ClassVar[str] = subjects.USER_OFFBOARDING_COMPLETED
    user: str
    mode: OffboardingMode = OffboardingMode.REVOKE
    found: int
    revoked: int
    removed: int
    cert_ids: list[str] = Field(default_factory=list)


class DeviceAssigned(Event):
    subject: ClassVar[str] = subjects.DEVICE_ASSIGNED
    device: str = Field(min_length=1)
    user: str | None = None


class DeviceUnassigned(DeviceAssigned):
    subject: ClassVar[str] = subjects.DEVICE_UNASSIGNED


class DeviceDecommissioned(DeviceAssigned):
    subject: ClassVar[str] = subjects.DEVICE_DECOMMISSIONED


StoreType = Literal["pem", "pkcs12", "jks"]
STORE_TYPES: tuple[StoreType, ...] = ("pem", "pkcs12", "jks")


def is_store_type(value: object) -> TypeGuard[StoreType]:
    return value in STORE_TYPES


class StoreTarget(BaseModel):
    """Where on a machine a certificate lives: a store of a type at a path, under an alias.

    A PEM directory names an entry's files ``<alias>.crt``, ``<alias>.key`` and
    ``<alias>.chain.pem`` unless the target says otherwise: ``cert_file``, ``key_file`` and
    ``chain_file`` name them outright (plain file names, see ``check_file_name``), or
    ``cert_suffix``, ``key_suffix`` and ``chain_suffix`` replace the suffixes."""

    model_config = ConfigDict(extra="allow")
    machine: str
    store_type: StoreType = "pem"
    store_path: str
    alias: str


PEM_FILE_FIELDS = ("cert_file", "key_file", "chain_file")


def check_file_name(name: str) -> str:
    """``name`` when it names a file directly inside a store's directory; else ValueError."""
    if not name or name in (".", "..") or "\x00" in name:
        raise ValueError(f"{name!r} is not a file name")
    if "/" in name or "\\" in name:
        raise ValueError(f"{name!r} is a path, not a file name (the directory is the store path)")
    if name.startswith("."):
        raise ValueError(f"{name!r} would be a hidden file")
    if len(name.encode()) > 255:
        raise ValueError(f"{name[:40]!r}... is longer than a file name may be (255 bytes)")
    return name


class CertRequested(Event):
    """Somebody asked for a certificate: an agent with a CSR, inventory's policy, or the API."""

    subject: ClassVar[str] = subjects.CERT_REQUESTED
    request_id: str = Field(min_length=1, max_length=200)
    template: str
    csr_pem: str | None = None
    subject_dn: str | None = None
    sans: list[str] = Field(default_factory=list)
    owner: str | None = None
    device: str | None = None
    target: StoreTarget | None = None
    job_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    renewal_of: str | None = None
    ca: str | None = None


class CertIssued(Event):
    subject: ClassVar[str] = subjects.CERT_ISSUED
    request_id: str
    cert_id: str
    serial: str
    issuer_ca: str
    issuer_dn: str
    subject_dn: str
    sans: list[str] = Field(default_factory=list)
    thumbprint_sha1: str
    thumbprint_sha256: str
    public_key_sha256: str
    not_before: datetime
    not_after: datetime
    template: str
    key_type: str
    key_size: int | None = None
    signature_algorithm: str
    owner: str | None = None
    device: str | None = None
    target: StoreTarget | None = None
    job_id: str | None = None
    certificate_pem: str
    chain_pem: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    renewal_of: str | None = None


class CertRejected(Event):
    subject: ClassVar[str] = subjects.CERT_REJECTED
    request_id: str
    code: str
    message: str
    owner: str | None = None
    device: str | None = None
    job_id: str | None = None


class CertInstalled(Event):
    subject: ClassVar[str] = subjects.CERT_INSTALLED
    cert_id: str
    serial: str
    thumbprint_sha256: str
    target: StoreTarget
    job_id: str | None = None


class CertRemoved(Event):
    subject: ClassVar[str] = subjects.CERT_REMOVED
    cert_id: str
    serial: str
    target: StoreTarget
    job_id: str | None = None
    found: bool = True


class CertRevocationRequested(Event):
    subject: ClassVar[str] = subjects.CERT_REVOCATION_REQUESTED
    cert_ids: list[str] = Field(default_factory=list)
    serials: list[str] = Field(default_factory=list)
    query: str | None = None
    reason: RevocationReason = RevocationReason.UNSPECIFIED
    comment: str = Field(min_length=1)
    effective_at: datetime | None = None
    invalidity_date: datetime | None = None


class CertRevoked(Event):
    subject: ClassVar[str] = subjects.CERT_REVOKED
    cert_id: str
    serial: str
    issuer_ca: str
    reason: RevocationReason
    comment: str
    revoked_at: datetime
    invalidity_date: datetime | None = None
    owner: str | None = None


class CertReleased(Event):
    """A certificate on hold was released: it is good again and leaves the CRL."""

    subject: ClassVar[str] = subjects.CERT_RELEASED
    cert_id: str
    serial: str
    issuer_ca: str
    comment: str = ""


class CertRenewalRequested(Event):
    subject: ClassVar[str] = subjects.CERT_RENEWAL_REQUESTED
    cert_id: str
    request_id: str
    template: str | None = None
    ca: str | None = None
    csr_pem: str | None = None
    owner: str | None = None


class CertRenewed(Event):
    subject: ClassVar[str] = subjects.CERT_RENEWED
    old_cert_id: str
    new_cert_id: str


class CertExpiring(Event):
    subject: ClassVar[str] = subjects.CERT_EXPIRING
    cert_id: str
    not_after: datetime
    days_left: int


class CertMetadataChanged(Event):
    subject: ClassVar[str] = subjects.CERT_METADATA_CHANGED
    cert_id: str
    field: str
    old: str | None = None
    new: str | None = None


class CertDriftDetected(Event):
    """A store differs from what inventory expects: a certificate that should not be there
    (``unexpected``: revoked or unknown) or one that should be there and is not (``missing``)."""

    subject: ClassVar[str] = subjects.CERT_DRIFT_DETECTED
    kind: Literal["unexpected", "missing"]
    machine: str
    target: StoreTarget
    cert_id: str | None = None
    serial: str | None = None
    thumbprint_sha256: str | None = None
    reason: str = ""
    job_id: str | None = None
    fixed: bool = False


class KeyCompromised(Event):
    subject: ClassVar[str] = subjects.KEY_COMPROMISED
    public_key_sha256: str
    comment: str = "key compromised"


class CaCreated(Event):
    subject: ClassVar[str] = subjects.CA_CREATED
    ca: str
    subject_dn: str
    key_type: str
    certificate_pem: str
    parent: str | None = None


class CaCompromised(Event):
    subject: ClassVar[str] = subjects.CA_COMPROMISED
    ca: str
    comment: str = "CA compromised"


class CrlPublished(Event):
    """A CA's new CRL is in the object store bucket under ``object_name``."""

    subject: ClassVar[str] = subjects.CRL_PUBLISHED
    ca: str
    crl_number: int
    delta: bool = False
    base_crl_number: int | None = None
    this_update: datetime
    next_update: datetime
    entries: int
    object_name: str
    sha256: str


class JobKind(StrEnum):
    INVENTORY = "inventory"
    ADD = "add"
    REMOVE = "remove"
    CREATE = "create"
    REENROLL = "reenroll"
    DISCOVER = "discover"


class AgentJob(Event):
    """A job for one agent, on ``agent.<machine>.jobs``."""

    subject: ClassVar[str] = subjects.AGENT_JOBS_WILDCARD
    job_id: str
    machine: str
    kind: JobKind
    target: StoreTarget | None = None
    request_id: str | None = None
    template: str | None = None
    subject_dn: str | None = None
    sans: list[str] = Field(default_factory=list)
    key_type: str = "ec-p256"
    owner: str | None = None
    cert_id: str | None = None
    serial: str | None = None
    certificate_pem: str | None = None
    chain_pem: list[str] = Field(default_factory=list)
    payload: dict[str, Any] = Field(default_factory=dict)
    renewal_of: str | None = None
    """A reenroll job that renews this certificate (the agent says so in its CSR request)."""

    def subject_name(self) -> str:
        return subjects.agent_jobs(self.machine)


class AgentJobCompleted(Event):
    """An agent finished a job. A result too large for one message comes as ``parts`` events
    (``part`` 1 to ``parts``), each with a share of the result's lists and the SHA-256 of the
    whole result (see ``shared.job_results``); the job is complete once all of them arrived."""

    subject: ClassVar[str] = subjects.AGENT_JOB_COMPLETED
    job_id: str
    machine: str
    kind: JobKind
    result: dict[str, Any] = Field(default_factory=dict)
    part: int = Field(default=1, ge=1)
    parts: int = Field(default=1, ge=1)
    result_sha256: str | None = None

    @model_validator(mode="after")
    def _part_of_parts(self) -> AgentJobCompleted:
        if self.part > self.parts:
            raise ValueError(f"part {self.part} of {self.parts} does not exist")
        if self.parts > 1 and not self.result_sha256:
            raise ValueError("a result in parts names the SHA-256 of the whole result")
        return self


class AgentJobFailed(Event):
    subject: ClassVar[str] = subjects.AGENT_JOB_FAILED
    job_id: str
    machine: str
    kind: JobKind
    error: str
    code: str = "job_failed"


class AgentHeartbeat(Event):
    subject: ClassVar[str] = subjects.AGENT_HEARTBEAT
    machine: str
    version: str = "1"


class NotificationSent(Event):
    subject: ClassVar[str] = subjects.NOTIFICATION_SENT
    channel: str
    about_event_id: str
    about_subject: str


class NotificationFailed(NotificationSent):
    subject: ClassVar[str] = subjects.NOTIFICATION_FAILED
    error: str


CATALOG: dict[str, type[Event]] = {
    cls.subject: cls
    for cls in (
        UserOnboarded,
        UserUpdated,
        UserOffboarded,
        UserOffboardingCompleted,
        DeviceAssigned,
        DeviceUnassigned,
        DeviceDecommissioned,
        CertRequested,
        CertIssued,
        CertRejected,
        CertInstalled,
        CertRemoved,
        CertRevocationRequested,
        CertRevoked,
        CertReleased,
        CertRenewalRequested,
        CertRenewed,
        CertExpiring,
        CertMetadataChanged,
        CertDriftDetected,
        KeyCompromised,
        CaCreated,
        CaCompromised,
        CrlPublished,
        AgentJob,
        AgentJobCompleted,
        AgentJobFailed,
        AgentHeartbeat,
        NotificationSent,
        NotificationFailed,
    )
}

HR_EVENTS: dict[str, type[Event]] = {
    s: m
    for s, m in CATALOG.items()
    if s.startswith(("user.", "device.", "key.")) and s != subjects.USER_OFFBOARDING_COMPLETED
}


def model_for(subject: str) -> type[Event]:
    """The model of a concrete subject (``agent.<m>.jobs`` resolves to ``AgentJob``)."""
    if subject in CATALOG:
        return CATALOG[subject]
    parts = subject.split(".")
    if len(parts) == 3 and parts[0] == subjects.AGENT_JOBS_PREFIX and parts[2] == "jobs":
        return AgentJob
    raise LookupError(f"no event model for subject {subject!r}")
