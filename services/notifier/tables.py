from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.clock import utcnow


def _utc(nullable: bool = True) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=nullable)


class Delivery(SQLModel, table=True):
    """One event to one channel: sent at most once at a time, and never again once sent."""

    __tablename__ = "notifier_delivery"
    __table_args__ = (UniqueConstraint("event_id", "channel", name="notifier_delivery_once"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(index=True)
    channel: str
    subject: str = Field(index=True)
    correlation_id: str = ""
    status: str = Field(default="sending", index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    lease_until: datetime | None = Field(default=None, sa_column=_utc())
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=_utc())


class CertificateFacts(SQLModel, table=True):
    """What ``cert.issued`` said of a certificate, so later events about it can be filtered
    by owner and template even when they do not carry them (``cert.expiring``)."""

    __tablename__ = "notifier_certificate"

    cert_id: str = Field(primary_key=True)
    owner: str | None = None
    template: str | None = None
    subject_dn: str | None = None


TABLES = [Delivery.__table__, CertificateFacts.__table__]  # type: ignore[attr-defined]
