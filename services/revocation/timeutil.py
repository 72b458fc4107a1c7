"""Databases differ in what they give back for a timestamp; the service works in aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes for what was stored as UTC; make them aware again."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
