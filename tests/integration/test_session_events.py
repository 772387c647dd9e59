"""Session events, check, logout and status against a moto server (EventBridge delivering to an SQS
queue through a rule, as a user's subscription would), the Kite simulator and the official client."""

from __future__ import annotations

import io
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from kiteconnect import KiteConnect
from kiteconnect.exceptions import TokenException

from kitehooks import aws, clock
from kitehooks.clock import IST
from kitehooks.kite import client as kite
from kitehooks.sessions.admin import SessionActionFailed
from kitehooks.sessions.store import SessionStore, new_session
from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues
from tests.conftest import (
    TEST_API_KEY,
    TEST_API_SECRET,
    FakeLambdaContext,
    callback_settings,
    closed_port,
    fresh_request_token,
    load_function,
)
from tests.conftest import reset_layer_caches as reset_conftest_caches
from tests.event_capture import EventCapture, capture_events
from tests.integration.test_login_flow import Browser
from tests.integration.test_session_function import Invoke, logged_in, session_invoker, stored


def reset_layer_caches() -> None:
    reset_conftest_caches()
    aws.events_client.cache_clear()


@pytest.fixture
def captured(aws_env: str) -> Iterator[EventCapture]:
    yield from capture_events()


def test_moto_delivers_only_kitehooks_events_to_the_rules_target(captured: EventCapture) -> None:
    # The capture itself is a real part: prove it delivers, and filters, before trusting it.
    events = boto3.client("events")
    for source in ("kitehooks", "someone-else"):
        events.put_events(Entries=[{"Source": source, "DetailType": "probe", "Detail": "{}"}])
    assert [(e["source"], e["detail-type"]) for e in captured.events()] == [("kitehooks", "probe")]


@pytest.fixture
def prefix(stack: ResourceValues, sim: KiteSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The callback's and the session function's settings, as the template sets them."""
    prefix = f"kitehooks-test-{uuid.uuid4().hex[:8]}/sessions"
    sim.set_approved_platform(True)  # refresh tokens, so their revocation can be seen
    for name, value in {
        **callback_settings(stack, sim.url, prefix, kite_read_timeout="2"),
        "KITE_CHECK_REQUESTS_PER_SECOND": "10",
    }.items():
        monkeypatch.setenv(name, value)
    reset_layer_caches()
    # Loaded before a test's log capture, so Powertools' handler is the one it copies the format of.
    for function in ("login", "callback", "session"):
        load_function(function)
    yield prefix
    reset_layer_caches()


@pytest.fixture
def invoke(prefix: str) -> Invoke:
    return session_invoker()


def login(sim: KiteSimulator, prefix: str) -> dict[str, Any]:
    """A user's whole login: /login, Kite's page, /callback. Returns the stored session."""
    browser = Browser(sim, prefix)
    answer = browser.full_login()
    assert answer.status == 200, answer.body
    return stored(prefix)


def only(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(events) == 1, events
    return events[0]


# -- started ------------------------------------------------------------------------------------


def test_a_stored_login_announces_kite_session_started(
    sim: KiteSimulator, prefix: str, captured: EventCapture
) -> None:
    session = login(sim, prefix)
    event = only(captured.events())
    assert (event["source"], event["detail-type"]) == ("kitehooks", "Kite session started")
    assert event["detail"] == {
        "user_id": "AB1234",
        "status": "active",
        "login_time": session["login_time"],
        "expires_at": session["expires_at"],
        "at": event["detail"]["at"],
    }
    assert datetime.fromisoformat(event["detail"]["at"]).utcoffset() == timedelta(0)


def test_a_refused_login_announces_nothing(
    sim: KiteSimulator, prefix: str, captured: EventCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_USER_IDS", "ZZ9999")
    reset_layer_caches()
    assert Browser(sim, prefix).full_login().status == 403
    assert captured.events() == []


def test_a_login_still_succeeds_when_eventbridge_is_down(
    sim: KiteSimulator,
    prefix: str,
    captured: EventCapture,
    monkeypatch: pytest.MonkeyPatch,
    service_logs: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", f"http://127.0.0.1:{closed_port()}")
    reset_layer_caches()
    session = login(sim, prefix)
    assert session["status"] == "active"
    assert session["access_token"] in sim.active_access_tokens()
    assert captured.events() == []
    assert "session event not sent" in service_logs.getvalue()
    # The metric the alarm watches (Powertools prints it to stdout as an embedded-metric line).
    assert '"SessionEventNotSent":[1.0]' in capsys.readouterr().out.replace(" ", "")


# -- check --------------------------------------------------------------------------------------


def test_a_killed_token_is_found_by_check_and_ends_the_session_once(
    sim: KiteSimulator, prefix: str, invoke: Invoke, captured: EventCapture
) -> None:
    session = login(sim, prefix)
    captured.events()  # the login's own event
    # A login elsewhere kills the token: the official client now gets TokenException.
    sim.kill_access_tokens(session["access_token"])
    official = KiteConnect(api_key=TEST_API_KEY, root=sim.url)
    official.set_access_token(session["access_token"])
    with pytest.raises(TokenException):
        official.profile()

    result = invoke({"action": "check"})
    assert result["ok"] is True
    assert result["detail"]["expired"] == ["AB1234"]
    after = stored(prefix)
    assert (after["status"], after["access_token"]) == ("expired", "")
    assert after["refresh_token"] == session["refresh_token"]  # still renewable
    event = only(captured.ended())
    assert event["detail"]["user_id"] == "AB1234"
    assert (event["detail"]["status"], event["detail"]["reason"]) == ("expired", "token_invalid")

    # Checked again: nothing active to check, and no second event.
    again = invoke({"action": "check", "user_id": "AB1234"})
    assert (again["detail"]["expired"], again["detail"]["inactive"]) == ([], 1)
    assert captured.events() == []


def test_check_leaves_a_live_session_alone_and_asks_kite_the_documented_way(
    sim: KiteSimulator, prefix: str, invoke: Invoke, captured: EventCapture
) -> None:
    session = login(sim, prefix)
    captured.events()
    sim.clear_api_requests()
    result = invoke({"action": "check", "user_id": "AB1234"})
    assert result == {
        "ok": True,
        "detail": {
            "alive": 1,
            "expired": [],
            "superseded": [],
            "inactive": 0,
            "unverified": [],
            "not_reached": [],
            "failed": [],
        },
    }
    [request] = sim.api_requests()
    assert (request.method, request.path) == ("GET", "/user/profile")
    assert stored(prefix)["access_token"] == session["access_token"]
    assert captured.events() == []


def test_other_kite_errors_leave_the_session_active_and_are_reported(
    sim: KiteSimulator, prefix: str, invoke: Invoke, captured: EventCapture
) -> None:
    login(sim, prefix)
    captured.events()
    sim.set_html_errors(True)
    result = invoke({"action": "check"})
    assert result["ok"] is True
    [unverified] = result["detail"]["unverified"]
    assert unverified["user_id"] == "AB1234"
    assert "502" in unverified["reason"]
    assert stored(prefix)["status"] == "active"
    assert captured.events() == []


def test_check_of_an_unknown_user_is_refused(prefix: str, invoke: Invoke) -> None:
    result = invoke({"action": "check", "user_id": "ZZ0000"})
    assert result["ok"] is False
    assert "no session stored" in result["detail"]["error"]


class TwentySecondsLeft(FakeLambdaContext):
    def get_remaining_time_in_millis(self) -> int:
        return 20_000


def test_check_is_paced_reports_what_its_deadline_left_and_the_next_run_goes_on_from_there(
    sim: KiteSimulator, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [f"AB{n:04d}" for n in range(1, 9)]
    for user_id in users:
        logged_in(sim, prefix, user_id)
    monkeypatch.setenv("KITE_CHECK_REQUESTS_PER_SECOND", "2")
    reset_layer_caches()
    app = load_function("session")
    slot = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)  # 09:30 IST, a check run's time
    reached: list[set[str]] = []
    for run in range(2):
        monkeypatch.setattr(clock, "utc_now", lambda run=run: slot + timedelta(minutes=15 * run))
        sim.clear_api_requests()
        started = time.monotonic()
        detail = app.handler({"action": "check"}, TwentySecondsLeft())["detail"]
        elapsed = time.monotonic() - started
        # 20 s left, 5 s kept back, and a session is only started with 12 s to spare: about 3 s of
        # calls at 2 a second, then the rest is reported, not silently skipped.
        assert detail["not_reached"]
        assert detail["alive"] + len(detail["not_reached"]) == len(users)
        assert elapsed < 20 - 5
        reached.append(set(users) - set(detail["not_reached"]))
        profile_calls = [r.received_at for r in sim.api_requests() if r.path == "/user/profile"]
        assert len(profile_calls) == detail["alive"]
        assert min(b - a for a, b in itertools.pairwise(profile_calls)) >= 0.45  # never over 2 a second
    # The second run starts where the first one's window ended: between them, everyone.
    assert reached[0] | reached[1] == set(users)


# -- logout and status --------------------------------------------------------------------------


def test_logout_revokes_both_tokens_at_kite_and_announces_revoked_once(
    sim: KiteSimulator, prefix: str, invoke: Invoke, captured: EventCapture
) -> None:
    session = login(sim, prefix)
    assert session["refresh_token"] in sim.active_refresh_tokens()
    captured.events()
    assert invoke({"action": "logout", "user_id": "AB1234"}) == {
        "ok": True,
        "detail": {"user_id": "AB1234", "status": "revoked"},
    }
    assert session["access_token"] not in sim.active_access_tokens()
    assert session["refresh_token"] not in sim.active_refresh_tokens()
    official = KiteConnect(api_key=TEST_API_KEY, root=sim.url)
    with pytest.raises(TokenException):
        official.renew_access_token(session["refresh_token"], TEST_API_SECRET)
    after = stored(prefix)
    assert (after["status"], after["access_token"], after["refresh_token"]) == ("revoked", "", "")
    event = only(captured.ended())
    assert (event["detail"]["status"], event["detail"]["reason"]) == ("revoked", "revoked")
    assert invoke({"action": "logout", "user_id": "AB1234"})["ok"] is True
    assert captured.events() == []  # nothing ended the second time


def test_logout_without_a_refresh_token_ends_the_access_token_only(
    sim: KiteSimulator, prefix: str, invoke: Invoke
) -> None:
    sim.set_approved_platform(False)
    session = login(sim, prefix)
    assert session["refresh_token"] == ""
    sim.clear_api_requests()
    assert invoke({"action": "logout", "user_id": "AB1234"})["ok"] is True
    assert [(r.method, sorted(r.query)) for r in sim.api_requests()] == [
        ("DELETE", ["access_token", "api_key"])
    ]


def test_status_answers_status_expiry_and_login_time_and_never_a_token(
    sim: KiteSimulator, prefix: str, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = login(sim, prefix)
    result = invoke({"action": "status", "user_id": "AB1234"})
    assert result == {
        "ok": True,
        "detail": {
            "user_id": "AB1234",
            "status": "active",
            "expires_at": session["expires_at"],
            "login_time": session["login_time"],
        },
    }
    # Past 06:00 IST the session is dead at Kite, marked or not.
    past_expiry = datetime.fromisoformat(session["expires_at"]) + timedelta(seconds=1)
    monkeypatch.setattr(clock, "utc_now", lambda: past_expiry.astimezone(UTC))
    assert invoke({"action": "status", "user_id": "AB1234"})["detail"]["status"] == "expired"
    missing = invoke({"action": "status", "user_id": "ZZ0000"})
    assert missing == {
        "ok": True,
        "detail": {"user_id": "ZZ0000", "status": "missing", "expires_at": None, "login_time": None},
    }
    assert invoke({"action": "status", "user_id": "../x"})["ok"] is False


# -- expiry at 06:00 IST, by a frozen clock -----------------------------------------------------


def ist(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=IST)


@pytest.mark.parametrize(
    ("logged_in_at", "run_at", "expired"),
    [
        # Logged in before midnight: the session lives through midnight until 06:00.
        ("2026-11-30 23:59:00", "2026-12-01 00:00:01", False),
        ("2026-11-30 23:59:00", "2026-12-01 05:59:59", False),
        ("2026-11-30 23:59:00", "2026-12-01 06:00:00", True),
        # Logged in after midnight: the same morning's 06:00, not the next day's.
        ("2026-12-01 00:30:00", "2026-12-01 05:59:59", False),
        ("2026-12-01 00:30:00", "2026-12-01 06:00:00", True),
        # Logged in at 06:00 itself: the next morning's.
        ("2026-12-01 06:00:00", "2026-12-01 06:00:01", False),
        ("2026-12-01 06:00:00", "2026-12-02 06:00:00", True),
    ],
)
def test_expiry_at_0600_ist_by_the_clock(
    sim: KiteSimulator,
    prefix: str,
    invoke: Invoke,
    captured: EventCapture,
    monkeypatch: pytest.MonkeyPatch,
    logged_in_at: str,
    run_at: str,
    expired: bool,
) -> None:
    grant = kite.KiteClient(sim.url, TEST_API_KEY).exchange_request_token(
        fresh_request_token(sim), TEST_API_SECRET
    )
    login_moment = ist(logged_in_at)
    session = new_session(
        "AB1234",
        grant.user_name,
        TEST_API_KEY,
        grant.access_token,
        grant.public_token,
        grant.refresh_token,
        login_moment.strftime("%Y-%m-%d %H:%M:%S"),
        login_moment,
    )
    SessionStore(boto3.client("secretsmanager"), prefix).put(session)
    frozen = ist(run_at).astimezone(UTC)
    monkeypatch.setattr(clock, "utc_now", lambda: frozen)

    result = invoke({"action": "expire"})
    assert result["detail"]["expired"] == (["AB1234"] if expired else [])
    assert stored(prefix)["status"] == ("expired" if expired else "active")
    ended = captured.ended()
    if expired:
        event = only(ended)
        assert event["detail"] == {
            "user_id": "AB1234",
            "status": "expired",
            "reason": "expired",
            "at": frozen.isoformat(),
        }
    else:
        assert ended == []
    assert invoke({"action": "expire"})["detail"]["expired"] == []  # idempotent
    assert captured.events() == []


def test_an_expiry_whose_event_is_not_sent_keeps_the_write_and_fails_the_run(
    sim: KiteSimulator,
    prefix: str,
    invoke: Invoke,
    monkeypatch: pytest.MonkeyPatch,
    service_logs: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logged_in(sim, prefix, "AB1234", expires_in=timedelta(minutes=-1))
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", f"http://127.0.0.1:{closed_port()}")
    reset_layer_caches()
    with pytest.raises(SessionActionFailed, match=r"1 session\(s\) expired but 1 event\(s\) not sent"):
        invoke({"action": "expire"})
    assert stored(prefix)["status"] == "expired"  # the session write stands
    assert "session event not sent" in service_logs.getvalue()
    assert '"SessionEventNotSent":[1.0]' in capsys.readouterr().out.replace(" ", "")


# -- no token anywhere --------------------------------------------------------------------------


def test_no_token_reaches_any_event_log_or_answer(
    sim: KiteSimulator,
    prefix: str,
    invoke: Invoke,
    captured: EventCapture,
    service_logs: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = login(sim, prefix)
    sim.kill_access_tokens(first["access_token"])
    answers = [invoke({"action": "check"})]
    answers.append(invoke({"action": "renew", "user_id": "AB1234"}))
    second = stored(prefix)
    answers.append(invoke({"action": "status", "user_id": "AB1234"}))
    third = login(sim, prefix)
    answers.append(invoke({"action": "logout", "user_id": "AB1234"}))
    events = captured.events()
    assert [e["detail-type"] for e in events].count("Kite session ended") == 2  # killed, logged out
    assert [e["detail-type"] for e in events].count("Kite session started") == 3  # 2 logins, 1 renewal
    output = json.dumps(events) + json.dumps(answers) + service_logs.getvalue()
    captured_io = capsys.readouterr()
    output += captured_io.out + captured_io.err
    planted = [TEST_API_SECRET]
    for session in (first, second, third):
        planted += [session["access_token"], session["public_token"], session["refresh_token"]]
    planted += sim.issued_request_tokens()
    for value in planted:
        assert value
        assert value not in output
