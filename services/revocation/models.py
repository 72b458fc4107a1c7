"""The revocation service's tables: its projection of other services' facts, and its own records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _utc_column(nullable: bool = False, index: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class KnownCertificate(SQLModel, table=True):
    """A certificate the issuer announced (``cert.issued``)."""

    __tablename__ = "revocation_certificate"
    __table_args__ = (
        UniqueConstraint("issuer_ca", "serial", name="revocation_certificate_ca_serial"),
    )

    cert_id: str = Field(primary_key=True)
    serial: str = Field(index=True)
    issuer_ca: str = Field(index=True)
    owner: str | None = Field(default=None, index=True)
    device: str | None = Field(default=None, index=True)
    public_key_sha256: str = Field(index=True)
    thumbprint_sha1: str = Field(index=True)
    thumbprint_sha256: str = Field(index=True)
    subject_dn: str = ""
    not_after: datetime = Field(sa_column=_utc_column())


class Installation(SQLModel, table=True):
    """Where a certificate is installed (``cert.installed`` / ``cert.removed``)."""

    __tablename__ = "revocation_installation"

    cert_id: str = Field(primary_key=True)
    machine: str = Field(primary_key=True, index=True)
    store_path: str = Field(primary_key=True)
    alias: str = Field(primary_key=True)
    serial: str = ""


class DeviceOwner(SQLModel, table=True):
    """Which user a device belongs to (``user.*``, ``device.*``)."""

    __tablename__ = "revocation_device"

    device: str = Field(primary_key=True)
    user: str = Field(index=True)


class OffboardedUser(SQLModel, table=True):
    """A user offboarded in revoke mode: later certificates of theirs are revoked at once."""

    __tablename__ = "revocation_offboarded_user"

    user: str = Field(primary_key=True)
    event_id: str
    correlation_id: str
    comment: str
    revoked_at: datetime = Field(sa_column=_utc_column())
    occurred_at: datetime = Field(sa_column=_utc_column())


class Revocation(SQLModel, table=True):
    """One revoked certificate; unique by (CA, serial), so revoking twice changes nothing."""

    __tablename__ = "revocation_revocation"
    __table_args__ = (
        UniqueConstraint("issuer_ca", "serial", name="revocation_revocation_ca_serial"),
    )

    id: int | None = Field(default=None, primary_key=True)
    cert_id: str = Field(index=True)
    serial: str = Field(index=True)
    issuer_ca: str = Field(index=True)
    reason: int
    comment: str = Field(sa_column=Column(Text, nullable=False))
    revoked_at: datetime = Field(sa_column=_utc_column())
    invalidity_date: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    correlation_id: str
    cause: str
    recorded_at: datetime = Field(sa_column=_utc_column())


class ReleasedHold(SQLModel, table=True):
    """A lifted certificateHold, kept for the record after its revocation row is gone."""

    __tablename__ = "revocation_released_hold"

    id: int | None = Field(default=None, primary_key=True)
    cert_id: str = Field(index=True)
    serial: str
    issuer_ca: str
    held_at: datetime = Field(sa_column=_utc_column())
    released_at: datetime = Field(sa_column=_utc_column())
    comment: str = ""
    correlation_id: str = ""


class StoredCrl(SQLModel, table=True):
    """The newest full and the newest delta CRL of each CA, as the issuer published them."""

    __tablename__ = "revocation_crl"

    ca: str = Field(primary_key=True)
    delta: bool = Field(primary_key=True)
    crl_number: int
    der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sha256: str
    this_update: datetime = Field(sa_column=_utc_column())
    next_update: datetime = Field(sa_column=_utc_column())
    entries: int = 0
    stored_at: datetime = Field(sa_column=_utc_column())


class KnownCa(SQLModel, table=True):
    """A CA certificate (``ca.created``): served at the AIA URL and used to match OCSP requests."""

    __tablename__ = "revocation_ca"

    ca: str = Field(primary_key=True)
    subject_dn: str
    key_type: str
    der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    compromised: bool = False


class Compromise(SQLModel, table=True):
    """A compromised CA or key: what it certifies is revoked, now and on arrival later."""

    __tablename__ = "revocation_compromise"

    kind: str = Field(primary_key=True)  # "ca" or "key"
    value: str = Field(primary_key=True)
    event_id: str
    correlation_id: str
    comment: str
    at: datetime = Field(sa_column=_utc_column())


TABLES = [
    model.__table__  # type: ignore[attr-defined,union-attr]
    for model in (
        KnownCertificate,
        Installation,
        DeviceOwner,
        OffboardedUser,
        Revocation,
        ReleasedHold,
        StoredCrl,
        KnownCa,
        Compromise,
    )
]
