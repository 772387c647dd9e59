"""The reconciler's settings: Kite's rate stays under its limit, the grace is bounded, and every
required setting is named when missing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kitehooks import config
from kitehooks.config import ConfigurationError
from kitehooks.orders import settings

REQUIRED = {
    "KITE_API_ROOT": "https://api.kite.trade",
    "SESSION_PREFIX": "kitehooks/sessions",
    "ORDER_UPDATES_QUEUE_URL": "https://sqs.ap-south-1.amazonaws.com/123456789012/q.fifo",
    "ORDER_LEDGER_TABLE": "kitehooks-OrderLedgerTable",
}


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "KITE_RECONCILE_REQUESTS_PER_SECOND",
        "RECONCILER_GRACE_SECONDS",
        "KITEHOOKS_SESSION_FUNCTION",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    settings.reconciler_settings.cache_clear()
    config.session_settings.cache_clear()
    yield
    settings.reconciler_settings.cache_clear()
    config.session_settings.cache_clear()


def test_defaults_take_half_of_kites_rate_and_a_minute_of_grace() -> None:
    read = settings.reconciler_settings()
    assert (read.requests_per_second, read.grace_seconds, read.session_function) == (5.0, 60.0, "")
    assert read.order_ledger_table == REQUIRED["ORDER_LEDGER_TABLE"]


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("KITE_RECONCILE_REQUESTS_PER_SECOND", "8", True),
        ("KITE_RECONCILE_REQUESTS_PER_SECOND", "10", True),
        ("KITE_RECONCILE_REQUESTS_PER_SECOND", "11", False),
        ("KITE_RECONCILE_REQUESTS_PER_SECOND", "0", False),
        ("KITE_RECONCILE_REQUESTS_PER_SECOND", "fast", False),
        ("RECONCILER_GRACE_SECONDS", "0", True),
        ("RECONCILER_GRACE_SECONDS", "-1", False),
        ("RECONCILER_GRACE_SECONDS", "7200", False),
    ],
)
def test_numbers_are_checked(monkeypatch: pytest.MonkeyPatch, name: str, value: str, ok: bool) -> None:
    monkeypatch.setenv(name, value)
    if ok:
        settings.reconciler_settings()
    else:
        with pytest.raises(ConfigurationError, match=name):
            settings.reconciler_settings()


@pytest.mark.parametrize("missing", ["ORDER_UPDATES_QUEUE_URL", "ORDER_LEDGER_TABLE", "SESSION_PREFIX"])
def test_a_missing_setting_is_named(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigurationError, match=missing):
        settings.reconciler_settings()
