"""The metadata service's rows: values, their history, and its projection of certificates."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Text
from sqlmodel import Field, SQLModel

from shared.clock import utcnow
from shared.db import table_of


def _utc_column(**kwargs: object) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), **kwargs)  # type: ignore[arg-type]


class FieldValue(SQLModel, table=True):
    __tablename__ = "metadata_field_value"

    cert_id: str = Field(primary_key=True)
    field: str = Field(primary_key=True)
    value: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    actor: str = "system"


class HistoryEntry(SQLModel, table=True):
    __tablename__ = "metadata_history"

    id: int | None = Field(default=None, primary_key=True)
    cert_id: str = Field(index=True)
    field: str
    old: str | None = Field(default=None, sa_column=Column(Text))
    new: str | None = Field(default=None, sa_column=Column(Text))
    actor: str = "system"
    changed_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    event_id: str | None = None
    correlation_id: str | None = None


class KnownCertificate(SQLModel, table=True):
    """What ``cert.issued`` told metadata of a certificate: enough to find it and its owner."""

    __tablename__ = "metadata_certificate"

    cert_id: str = Field(primary_key=True)
    serial: str = Field(index=True)
    thumbprint_sha1: str = Field(index=True)
    thumbprint_sha256: str = Field(index=True)
    owner: str | None = Field(default=None, index=True)
    issued_event_id: str


class DisabledOwner(SQLModel, table=True):
    """A user offboarded in disable mode: certificates issued to them later start disabled."""

    __tablename__ = "metadata_disabled_owner"

    owner: str = Field(primary_key=True)
    event_id: str
    disabled_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class FieldDefinitionRow(SQLModel, table=True):
    __tablename__ = "metadata_field_definition"

    name: str = Field(primary_key=True)
    type: str = "string"
    required: bool = False
    default: str | None = Field(default=None, sa_column=Column(Text))
    description: str = ""


TABLES = [
    table_of(FieldDefinitionRow),
    table_of(FieldValue),
    table_of(HistoryEntry),
    table_of(KnownCertificate),
    table_of(DisabledOwner),
]
