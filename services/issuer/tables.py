"""The issuer's tables: issued certificates, CAs announced, revoked serials and CRL state."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class IssuedCertificate(SQLModel, table=True):
    __tablename__ = "issuer_certificate"
    __table_args__ = (UniqueConstraint("ca", "serial", name="issuer_certificate_ca_serial"),)

    cert_id: str = Field(primary_key=True)
    request_id: str = Field(unique=True)
    ca: str
    serial: str
    template: str
    owner: str | None = Field(default=None, index=True)
    thumbprint_sha256: str = Field(index=True)
    not_after: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    issued: str = Field(sa_column=Column(Text, nullable=False))


class AnnouncedCa(SQLModel, table=True):
    __tablename__ = "issuer_ca"

    name: str = Field(primary_key=True)
    parent: str | None = None
    key_type: str
    fingerprint_sha256: str
    certificate_pem: str = Field(sa_column=Column(Text, nullable=False))


class RevokedSerial(SQLModel, table=True):
    __tablename__ = "issuer_revoked"

    ca: str = Field(primary_key=True)
    serial: str = Field(primary_key=True)
    reason: int
    revoked_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    invalidity_date: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True))
    )
    released: bool = False
    changed_seq: int = Field(default=0, index=True)


class CrlState(SQLModel, table=True):
    __tablename__ = "issuer_crl_state"

    ca: str = Field(primary_key=True)
    last_number: int = 0
    base_number: int = 0
    base_seq: int = 0
    changes: int = 0
    published_changes: int = -1
    published_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


TABLES = [
    IssuedCertificate.__table__,  # type: ignore[attr-defined]
    AnnouncedCa.__table__,  # type: ignore[attr-defined]
    RevokedSerial.__table__,  # type: ignore[attr-defined]
    CrlState.__table__,  # type: ignore[attr-defined]
]
