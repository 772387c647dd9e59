"""The reconciler's settings, read once per container from the environment template.yaml sets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from kitehooks.config import ConfigurationError, KiteSettings, session_settings

DEFAULT_REQUESTS_PER_SECOND = 5.0
DEFAULT_GRACE_SECONDS = 60.0
# Kite's own limit per api_key: a run never takes all of it.
MAX_REQUESTS_PER_SECOND = 10.0


@dataclass(frozen=True, slots=True)
class ReconcilerSettings:
    kite: KiteSettings
    session_prefix: str
    queue_url: str
    order_ledger_table: str
    # SessionFunction, told about a token Kite refused; empty: the run only counts it.
    session_function: str
    requests_per_second: float
    grace_seconds: float


def _number(name: str, default: float, lowest: float, highest: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"environment variable {name} must be a number") from None
    if not lowest <= value <= highest:
        raise ConfigurationError(f"environment variable {name} must be from {lowest:g} to {highest:g}")
    return value


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set")
    return value


@cache
def reconciler_settings() -> ReconcilerSettings:
    sessions = session_settings()
    rate = _number(
        "KITE_RECONCILE_REQUESTS_PER_SECOND", DEFAULT_REQUESTS_PER_SECOND, 0.1, MAX_REQUESTS_PER_SECOND
    )
    return ReconcilerSettings(
        kite=sessions.kite,
        session_prefix=sessions.session_prefix,
        queue_url=_required("ORDER_UPDATES_QUEUE_URL"),
        order_ledger_table=_required("ORDER_LEDGER_TABLE"),
        session_function=os.environ.get("KITEHOOKS_SESSION_FUNCTION", "").strip(),
        requests_per_second=rate,
        grace_seconds=_number("RECONCILER_GRACE_SECONDS", DEFAULT_GRACE_SECONDS, 0, 3600),
    )
