"""The clock, in one place, so every function agrees on what "now" is (UTC, aware), and India's
time zone, in which Kite's timestamps, its sessions' expiry and its trading days are written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

# No daylight saving in India: a fixed offset is exact.
IST = timezone(timedelta(hours=5, minutes=30), "IST")


def utc_now() -> datetime:
    return datetime.now(UTC)


KITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def kite_time(text: Any) -> datetime | None:
    """Kite's ``"YYYY-MM-DD HH:MM:SS"`` (IST, no offset) as an aware datetime; None otherwise."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, KITE_TIME_FORMAT).replace(tzinfo=IST)
    except ValueError:
        return None
