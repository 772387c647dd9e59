"""The clock, in one place, so every function agrees on what "now" is (UTC, aware)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)
