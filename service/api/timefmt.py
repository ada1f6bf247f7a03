"""Timestamps: how they are stored per dialect and how the API prints them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now(dialect: str) -> Any:
    """The current time as a bind value: a datetime for PostgreSQL, ISO text for SQLite."""
    moment = datetime.now(UTC)
    return moment if dialect == "postgresql" else iso(moment)


def iso(value: Any) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. 2026-11-24T12:00:00.123Z."""
    if isinstance(value, str):
        return value
    value = value.astimezone(UTC)
    stamp: str = value.strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{stamp}{value.microsecond // 1000:03d}Z"
