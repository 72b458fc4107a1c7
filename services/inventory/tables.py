"""Inventory's rows: identities, the certificate catalog, locations, provisioning and jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text, UniqueConstraint, func
from sqlmodel import Field, SQLModel

from shared.clock import utcnow
from shared.db import table_of


def _utc(nullable: bool = True, index: bool = False) -> Any:
    return Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable, index=index)
    )


def _now() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


def _json(default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


class User(SQLModel, table=True):
    __tablename__ = "inventory_user"

    user: str = Field(primary_key=True)
    email: str | None = None
    department: str | None = None
    roles: list[str] = _json(list)
    status: str = "active"
    updated_at: datetime = _now()
    offboarded_at: datetime | None = _utc()


class Device(SQLModel, table=True):
    __tablename__ = "inventory_device"

    name: str = Field(primary_key=True)
    kind: str = "workstation"
    status: str = "active"
    created_at: datetime = _now()
    decommissioned_at: datetime | None = _utc()


class UserDevice(SQLModel, table=True):
    __tablename__ = "inventory_user_device"

    user: str = Field(primary_key=True)
    device: str = Field(primary_key=True, index=True)
    active: bool = True
    linked_at: datetime = _now()
    unlinked_at: datetime | None = _utc()


class Certificate(SQLModel, table=True):
    """One certificate: issued by certbus, or found in a store by an agent."""

    __tablename__ = "inventory_certificate"
    __table_args__ = (
        Index("ix_inventory_certificate_status_not_after", "status", "not_after"),
        Index("ix_inventory_certificate_owner_not_after", "owner", "not_after"),
    )

    cert_id: str = Field(primary_key=True)
    serial: str = Field(index=True)
    issuer_ca: str | None = None
    issuer_dn: str | None = None
    subject_dn: str | None = None
    cn: str | None = Field(default=None, index=True)
    sans: list[str] = _json(list)
    thumbprint_sha1: str | None = Field(default=None, index=True)
    thumbprint_sha256: str | None = Field(default=None, index=True)
    public_key_sha256: str | None = Field(default=None, index=True)
    not_before: datetime | None = _utc(index=True)
    not_after: datetime | None = _utc(index=True)
    template: str | None = Field(default=None, index=True)
    key_type: str | None = Field(default=None, index=True)
    key_size: int | None = Field(default=None, index=True)
    signature_algorithm: str | None = Field(default=None, index=True)
    owner: str | None = Field(default=None, index=True)
    device: str | None = Field(default=None, index=True)
    request_id: str | None = Field(default=None, index=True)
    status: str = Field(default="active", index=True)
    revocation_reason: str | None = Field(default=None, index=True)
    revocation_comment: str | None = None
    revoked_at: datetime | None = _utc()
    metadata_: dict[str, str] = Field(
        default_factory=dict, sa_column=Column("metadata", JSON, nullable=False)
    )
    certificate_pem: str | None = Field(default=None, sa_column=Column(Text))
    chain_pem: list[str] = _json(list)
    source: str = "issued"
    recorded_at: datetime = _now()


# Searches ignore case: these let an index answer equality and prefix queries.
for _column in ("cn", "subject_dn", "issuer_dn", "owner", "device", "template"):
    Index(f"ix_inventory_certificate_{_column}_lower", func.lower(table_of(Certificate).c[_column]))


class CertificateField(SQLModel, table=True):
    """Metadata values as rows, so a search on any field by name uses an index."""

    __tablename__ = "inventory_certificate_field"
    cert_id: str = Field(primary_key=True)
    field: str = Field(primary_key=True)
    value: str | None = None


Index(
    "ix_inventory_certificate_field_lower",
    table_of(CertificateField).c.field,
    func.lower(table_of(CertificateField).c.value),
)
Index(
    "ix_inventory_certificate_field_lower_name",
    func.lower(table_of(CertificateField).c.field),
    func.lower(table_of(CertificateField).c.value),
)


class Location(SQLModel, table=True):
    """Where a certificate is (or was) installed: one store on one machine, under an alias."""

    __tablename__ = "inventory_location"
    __table_args__ = (UniqueConstraint("cert_id", "machine", "store_path", "alias"),)

    id: int | None = Field(default=None, primary_key=True)
    cert_id: str = Field(index=True)
    machine: str = Field(index=True)
    store_type: str = "pem"
    store_path: str
    alias: str
    active: bool = True
    installed_at: datetime = _now()
    removed_at: datetime | None = _utc()


class CertificateEvent(SQLModel, table=True):
    """Every event in a certificate's life, for its history."""

    __tablename__ = "inventory_certificate_event"
    __table_args__ = (UniqueConstraint("cert_id", "event_id"),)

    id: int | None = Field(default=None, primary_key=True)
    cert_id: str = Field(index=True)
    event_id: str
    subject: str
    occurred_at: datetime = _now()
    actor: str = "system"
    details: dict[str, Any] = _json(dict)


class ProvisioningRequest(SQLModel, table=True):
    """One attempt to give a (user, device, template) its certificate; retired ones stay."""

    __tablename__ = "inventory_provisioning_request"
    __table_args__ = (
        Index("ix_inventory_provisioning_request_slot", "user", "device", "template"),
    )

    request_id: str = Field(primary_key=True)
    user: str = Field(index=True)
    device: str = Field(index=True)
    template: str
    rule: str | None = None
    status: str = "waiting"
    cert_id: str | None = Field(default=None, index=True)
    error: str | None = None
    target: dict[str, Any] = _json(dict)
    created_at: datetime = _now()
    updated_at: datetime = _now()


class Job(SQLModel, table=True):
    __tablename__ = "inventory_job"

    job_id: str = Field(primary_key=True)
    machine: str = Field(index=True)
    kind: str
    status: str = "sent"
    request_id: str | None = None
    cert_id: str | None = None
    target: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error: str | None = None
    error_code: str | None = None
    created_at: datetime = _now()
    updated_at: datetime = _now()


class JobPart(SQLModel, table=True):
    """One part of a job result that came in parts, kept until all of that result is in."""

    __tablename__ = "inventory_job_part"

    job_id: str = Field(primary_key=True)
    result_sha256: str = Field(primary_key=True)
    parts: int = Field(primary_key=True)
    part: int = Field(primary_key=True)
    result: dict[str, Any] = _json(dict)
    received_at: datetime = _now()


class Renewal(SQLModel, table=True):
    """Renewing one certificate in one place it is installed (see ``renewal``)."""

    __tablename__ = "inventory_renewal"

    request_id: str = Field(primary_key=True)
    current_request_id: str | None = Field(default=None, index=True)
    old_cert_id: str = Field(index=True)
    new_cert_id: str | None = Field(default=None, index=True)
    machine: str
    store_type: str = "pem"
    store_path: str
    alias: str
    status: str = Field(default="planned", index=True)  # planned, issued, installed, failed
    reason: str = "renewal"
    error: str | None = None
    attempt: int = 0
    created_at: datetime = _now()
    updated_at: datetime = _now()


class Offboarding(SQLModel, table=True):
    __tablename__ = "inventory_offboarding"

    user: str = Field(primary_key=True)
    mode: str = "revoke"
    status: str = "open"
    event_id: str | None = None
    correlation_id: str | None = None
    started_at: datetime = _now()
    completed_at: datetime | None = _utc()
    found: int = 0
    revoked: int = 0
    removed: int = 0
    pending: int = 0
    cert_ids: list[str] = _json(list)


class Agent(SQLModel, table=True):
    __tablename__ = "inventory_agent"

    machine: str = Field(primary_key=True)
    status: str = "pending"
    version: str | None = None
    first_seen: datetime = _now()
    last_seen: datetime = _now()
    decided_at: datetime | None = _utc()
    decided_by: str | None = None


class Store(SQLModel, table=True):
    """A certificate store on a machine: known from policy, the API, an install or discovery."""

    __tablename__ = "inventory_store"
    __table_args__ = (UniqueConstraint("machine", "store_type", "store_path"),)

    id: str = Field(primary_key=True)
    machine: str = Field(index=True)
    store_type: str
    store_path: str
    status: str = "approved"
    source: str = "install"
    entries: int | None = None
    created_at: datetime = _now()
    inventoried_at: datetime | None = _utc()
    last_job_id: str | None = None


class Drift(SQLModel, table=True):
    __tablename__ = "inventory_drift"

    id: str = Field(primary_key=True)
    machine: str = Field(index=True)
    kind: str
    store_type: str
    store_path: str
    alias: str
    cert_id: str | None = None
    serial: str | None = None
    reason: str = ""
    fixed: bool = False
    detected_at: datetime = _now()
    job_id: str | None = None


TABLES = [
    table_of(User),
    table_of(Device),
    table_of(UserDevice),
    table_of(Certificate),
    table_of(CertificateField),
    table_of(Location),
    table_of(CertificateEvent),
    table_of(ProvisioningRequest),
    table_of(Job),
    table_of(JobPart),
    table_of(Renewal),
    table_of(Offboarding),
    table_of(Agent),
    table_of(Store),
    table_of(Drift),
]
