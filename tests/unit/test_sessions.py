from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from kitehooks.clock import IST
from kitehooks.deadline import Deadline
from kitehooks.sessions.admin import Pacer
from kitehooks.sessions.events import SessionEvents, session_ended, session_started
from kitehooks.sessions.store import KiteSession, SessionStoreError, new_session, next_expiry, secret_name


@pytest.mark.parametrize(
    ("moment", "expiry"),
    [
        (datetime(2026, 11, 29, 9, 15, tzinfo=IST), datetime(2026, 11, 30, 6, 0, tzinfo=IST)),
        (datetime(2026, 11, 29, 5, 59, 59, tzinfo=IST), datetime(2026, 11, 29, 6, 0, tzinfo=IST)),
        (datetime(2026, 11, 29, 6, 0, tzinfo=IST), datetime(2026, 11, 30, 6, 0, tzinfo=IST)),
        (datetime(2026, 12, 31, 23, 0, tzinfo=IST), datetime(2027, 1, 1, 6, 0, tzinfo=IST)),
        # 00:10 UTC is 05:40 IST the same day: expires 20 minutes later, not a day later.
        (datetime(2026, 11, 29, 0, 10, tzinfo=UTC), datetime(2026, 11, 29, 6, 0, tzinfo=IST)),
    ],
)
def test_next_expiry_is_the_next_0600_ist(moment: datetime, expiry: datetime) -> None:
    assert next_expiry(moment) == expiry
    assert next_expiry(moment).isoformat().endswith("+05:30")


def test_new_session_reads_kites_login_time_as_ist() -> None:
    session = new_session(
        "AB1234",
        "Arjun",
        "key",
        "tok-access-1",
        "tok-public-1",
        "tok-refresh-1",
        "2026-11-29 09:15:00",
        datetime(2026, 11, 29, 3, 46, tzinfo=UTC),
    )
    assert session.login_time == "2026-11-29T09:15:00+05:30"
    assert session.expires_at == "2026-11-30T06:00:00+05:30"
    assert session.status == "active"
    assert "tok-" not in repr(session)  # tokens never reach a log line through repr()


@pytest.mark.parametrize("user_id", ["", "AB/../x", "A", "AB 12", "x" * 17])
def test_user_ids_that_are_not_kite_client_ids_never_name_a_secret(user_id: str) -> None:
    with pytest.raises(SessionStoreError):
        secret_name("kitehooks/sessions", user_id)


# -- session events and pacing (no AWS: the module's own rules) ----------------------------------

PLANTED = ("tok-access-1", "tok-public-1", "tok-refresh-1")


def planted_session() -> KiteSession:
    return new_session(
        "AB1234", "Arjun", "key", *PLANTED, "2026-11-29 09:15:00", datetime(2026, 11, 29, tzinfo=UTC)
    )


def test_session_events_carry_the_contracts_fields_and_no_token() -> None:
    now = datetime(2026, 11, 30, 0, 30, tzinfo=UTC)
    started = session_started(planted_session(), now).entry()
    ended_entry = session_ended("AB1234", "expired", "token_invalid", now).entry()
    assert (started["Source"], started["DetailType"], started["EventBusName"]) == (
        "kitehooks",
        "Kite session started",
        "default",
    )
    assert json.loads(ended_entry["Detail"]) == {
        "user_id": "AB1234",
        "status": "expired",
        "reason": "token_invalid",
        "at": "2026-11-30T00:30:00+00:00",
    }
    assert set(json.loads(started["Detail"])) == {"user_id", "status", "login_time", "expires_at", "at"}
    for token in PLANTED:
        assert token not in json.dumps([started, ended_entry])


class RefusingBus:
    """EventBridge accepting the call but not the entry (PutEvents' partial failure)."""

    def __init__(self) -> None:
        self.calls = 0

    def put_events(self, *, Entries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:  # noqa: N803
        self.calls += 1
        return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure"}]}


def test_an_entry_eventbridge_refuses_counts_as_not_sent() -> None:
    events = SessionEvents(RefusingBus(), Deadline.after(10))
    assert events.send(session_ended("AB1234", "revoked", "revoked", datetime.now(UTC))) is False
    assert events.not_sent == 1


def test_no_time_left_counts_as_not_sent_without_calling_eventbridge() -> None:
    bus = RefusingBus()
    events = SessionEvents(bus, Deadline.after(-1))
    assert events.send(session_ended("AB1234", "revoked", "revoked", datetime.now(UTC))) is False
    assert (bus.calls, events.not_sent) == (0, 1)


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_the_pacer_never_lets_calls_come_faster_than_its_rate() -> None:
    time = FakeTime()
    pacer = Pacer(5, sleep=time.sleep, clock=time.clock)
    calls = []
    for _ in range(11):
        pacer.wait()
        calls.append(time.now)
    assert calls[-1] - calls[0] == pytest.approx(2.0)  # 10 intervals of 0.2 s
    assert all(b - a >= 0.2 - 1e-9 for a, b in itertools.pairwise(calls))


def test_the_pacer_does_not_wait_when_calls_are_already_slow_and_holds_after_429() -> None:
    time = FakeTime()
    pacer = Pacer(5, sleep=time.sleep, clock=time.clock)
    pacer.wait()
    time.now += 1.0  # the call itself took a second
    pacer.wait()
    assert time.slept == []
    pacer.hold(1.0)
    pacer.wait()
    assert time.slept == [pytest.approx(1.0)]


def test_a_pacer_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(0)
