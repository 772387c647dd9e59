"""The session function (no public route) against the Kite simulator and a moto server."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from kitehooks.kite import client as kite
from kitehooks.sessions.admin import SessionActionFailed
from kitehooks.sessions.store import KiteSession, new_session
from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues
from tests.conftest import (
    TEST_API_KEY,
    TEST_API_SECRET,
    FakeLambdaContext,
    closed_port,
    fresh_request_token,
    load_function,
    reset_layer_caches,
)
from tests.faults import TricklingEndpoint

Invoke = Callable[[Any], dict[str, Any]]


@pytest.fixture
def prefix(stack: ResourceValues, sim: KiteSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    prefix = f"kitehooks-test-{uuid.uuid4().hex[:8]}/sessions"
    sim.set_approved_platform(True)  # refresh tokens, for renew and their revocation
    monkeypatch.setenv("API_CREDENTIALS_SECRET_ID", stack["ApiCredentialsSecret"]["Ref"])
    monkeypatch.setenv("KITE_API_ROOT", sim.url)
    monkeypatch.setenv("SESSION_PREFIX", prefix)
    reset_layer_caches()
    yield prefix
    reset_layer_caches()


def session_invoker() -> Invoke:
    """The session function's handler, loaded as Lambda loads it, as a call on one event."""
    app = load_function("session")

    def call(event: Any) -> dict[str, Any]:
        result: dict[str, Any] = app.handler(event, FakeLambdaContext())
        return result

    return call


@pytest.fixture
def invoke(prefix: str) -> Invoke:
    return session_invoker()


def logged_in(
    sim: KiteSimulator, prefix: str, user_id: str = "AB1234", expires_in: timedelta | None = None
) -> KiteSession:
    """A live Kite session stored the way the callback stores it."""
    token = fresh_request_token(sim)
    grant = kite.KiteClient(sim.url, TEST_API_KEY).exchange_request_token(token, TEST_API_SECRET)
    now = datetime.now(UTC)
    session = new_session(
        user_id,
        grant.user_name,
        TEST_API_KEY,
        grant.access_token,
        grant.public_token,
        grant.refresh_token,
        grant.login_time,
        now,
    )
    if expires_in is not None:
        session = replace(session, expires_at=(now + expires_in).isoformat())
    boto3.client("secretsmanager").create_secret(
        Name=f"{prefix}/{user_id}", SecretString=json.dumps(asdict(session))
    )
    return session


def stored(prefix: str, user_id: str = "AB1234") -> dict[str, Any]:
    value = boto3.client("secretsmanager").get_secret_value(SecretId=f"{prefix}/{user_id}")["SecretString"]
    session: dict[str, Any] = json.loads(value)
    return session


def test_expiry_marks_only_sessions_past_0600_ist(invoke: Invoke, sim: KiteSimulator, prefix: str) -> None:
    logged_in(sim, prefix, "AB1234", expires_in=timedelta(minutes=-1))
    logged_in(sim, prefix, "CD5678", expires_in=timedelta(hours=5))
    result = invoke({"action": "expire"})
    assert result == {"ok": True, "detail": {"expired": ["AB1234"], "failed": []}}
    assert stored(prefix, "AB1234")["status"] == "expired"
    assert stored(prefix, "AB1234")["access_token"] == ""
    assert stored(prefix, "CD5678")["status"] == "active"
    assert invoke({"action": "expire"})["detail"]["expired"] == []  # idempotent


def test_logout_ends_the_session_at_kite_and_marks_it_revoked(
    invoke: Invoke, sim: KiteSimulator, prefix: str
) -> None:
    session = logged_in(sim, prefix)
    assert invoke({"action": "logout", "user_id": "AB1234"}) == {
        "ok": True,
        "detail": {"user_id": "AB1234", "status": "revoked"},
    }
    assert session.access_token not in sim.active_access_tokens()
    assert session.refresh_token not in sim.active_refresh_tokens()
    after = stored(prefix)
    assert (after["status"], after["access_token"], after["refresh_token"]) == ("revoked", "", "")
    versions = boto3.client("secretsmanager").list_secret_version_ids(SecretId=f"{prefix}/AB1234")
    assert invoke({"action": "logout", "user_id": "AB1234"})["ok"]  # nothing left to end: still fine
    again = boto3.client("secretsmanager").list_secret_version_ids(SecretId=f"{prefix}/AB1234")
    assert len(again["Versions"]) == len(versions["Versions"])  # and nothing written


def test_renew_replaces_the_access_token(invoke: Invoke, sim: KiteSimulator, prefix: str) -> None:
    session = logged_in(sim, prefix)
    result = invoke({"action": "renew", "user_id": "AB1234"})
    assert result["ok"], result
    after = stored(prefix)
    assert after["access_token"] != session.access_token
    assert after["access_token"] in sim.active_access_tokens()
    assert session.access_token not in sim.active_access_tokens()
    assert after["status"] == "active"


def test_renew_without_a_refresh_token_says_the_user_must_log_in(
    invoke: Invoke, sim: KiteSimulator, prefix: str
) -> None:
    logged_in(sim, prefix)
    invoke({"action": "logout", "user_id": "AB1234"})
    result = invoke({"action": "renew", "user_id": "AB1234"})
    assert result["ok"] is False
    assert "must log in" in result["detail"]["error"]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"action": "dance", "user_id": "AB1234"}, "action must be"),
        ({"action": "expire", "user_id": "AB1234"}, "expire takes no user_id"),
        ({"action": "status"}, "user_id must be"),
        ({"action": "check", "user_id": "../etc"}, "user_id must be"),
        ({"action": "logout", "user_id": "../etc"}, "user_id must be"),
        ({"action": "renew"}, "user_id must be"),
        ({"action": "logout", "user_id": "ZZ0000"}, "no session stored"),
        (["expire"], "JSON object"),
    ],
)
def test_bad_requests_get_a_clear_error(invoke: Invoke, event: Any, message: str) -> None:
    # The caller's mistake: answered, not raised, so neither a retry nor an alarm follows.
    result = invoke(event)
    assert result["ok"] is False
    assert message in result["detail"]["error"]


def test_no_token_reaches_results_or_logs(
    invoke: Invoke,
    sim: KiteSimulator,
    prefix: str,
    service_logs: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = logged_in(sim, prefix, "AB1234", expires_in=timedelta(minutes=-1))
    second = logged_in(sim, prefix, "CD5678")
    results = [
        invoke({"action": "expire"}),
        invoke({"action": "renew", "user_id": "CD5678"}),
        invoke({"action": "logout", "user_id": "CD5678"}),
    ]
    captured = capsys.readouterr()
    output = json.dumps(results) + service_logs.getvalue() + captured.out + captured.err
    assert "sessions expired" in output
    for token in (
        first.access_token,
        first.refresh_token,
        second.access_token,
        second.refresh_token,
        TEST_API_SECRET,
    ):
        assert token not in output


# A failed run must fail the invocation: Lambda then counts an error, retries the scheduled run
# and finally records it in the dead-letter queue; a normal return would be a success to all three.


def test_expiry_that_leaves_a_session_unexpired_fails_the_run_after_expiring_the_others(
    invoke: Invoke, sim: KiteSimulator, prefix: str
) -> None:
    logged_in(sim, prefix, "AB1234", expires_in=timedelta(minutes=-1))
    boto3.client("secretsmanager").create_secret(Name=f"{prefix}/EF9012", SecretString="not a session")
    with pytest.raises(SessionActionFailed, match=r"could not expire 1 session\(s\) \(EF9012\); 1 expired"):
        invoke({"action": "expire"})
    assert stored(prefix, "AB1234")["status"] == "expired"


def test_expiry_fails_the_run_when_sessions_cannot_be_listed(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    reset_layer_caches()
    with pytest.raises(SessionActionFailed, match="expire failed: could not list sessions"):
        invoke({"action": "expire"})


def test_expiry_fails_the_run_when_unconfigured(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SESSION_PREFIX")
    reset_layer_caches()
    with pytest.raises(SessionActionFailed, match="SESSION_PREFIX"):
        invoke({"action": "expire"})


def test_logout_fails_when_kite_cannot_be_reached_and_keeps_the_session_active(
    invoke: Invoke, sim: KiteSimulator, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = logged_in(sim, prefix)
    monkeypatch.setenv("KITE_API_ROOT", f"http://127.0.0.1:{closed_port()}")
    reset_layer_caches()
    with pytest.raises(SessionActionFailed, match="Kite did not log out the session of AB1234") as failure:
        invoke({"action": "logout", "user_id": "AB1234"})
    assert session.access_token not in str(failure.value)
    # Still live at Kite: not marked revoked, so the retry (or the caller) can finish the job.
    assert stored(prefix)["status"] == "active"
    assert session.access_token in sim.active_access_tokens()


def test_renew_fails_when_kite_cannot_be_reached(
    invoke: Invoke, sim: KiteSimulator, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = logged_in(sim, prefix)
    monkeypatch.setenv("KITE_API_ROOT", f"http://127.0.0.1:{closed_port()}")
    reset_layer_caches()
    with pytest.raises(SessionActionFailed, match="Kite did not renew the session of AB1234") as failure:
        invoke({"action": "renew", "user_id": "AB1234"})
    for token in (session.access_token, session.refresh_token):
        assert token not in str(failure.value)
    assert stored(prefix)["access_token"] == session.access_token


def test_renew_refused_by_kite_is_an_answer_not_a_failure(
    invoke: Invoke, sim: KiteSimulator, prefix: str
) -> None:
    session = logged_in(sim, prefix)
    boto3.client("secretsmanager").put_secret_value(
        SecretId=f"{prefix}/AB1234",
        SecretString=json.dumps(asdict(replace(session, refresh_token="not-a-refresh-token-kite-knows"))),
    )
    result = invoke({"action": "renew", "user_id": "AB1234"})
    assert result["ok"] is False
    assert "Kite did not renew the session" in result["detail"]["error"]


@pytest.mark.parametrize("action", ["logout", "renew"])
def test_session_actions_fail_when_the_credentials_are_unreadable(
    invoke: Invoke, sim: KiteSimulator, prefix: str, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    logged_in(sim, prefix)
    monkeypatch.setenv("API_CREDENTIALS_SECRET_ID", "kitehooks-test/no-such-secret")
    reset_layer_caches()
    with pytest.raises(SessionActionFailed, match=f"{action} failed: could not read credentials secret"):
        invoke({"action": action, "user_id": "AB1234"})
    assert stored(prefix)["status"] == "active"


def test_session_actions_fail_when_secrets_manager_is_down(
    invoke: Invoke, sim: KiteSimulator, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged_in(sim, prefix)
    invoke({"action": "renew", "user_id": "AB1234"})  # the credentials are now cached
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{closed_port()}")
    from kitehooks import aws

    aws.secretsmanager_client.cache_clear()  # a new client, as after a cold start, but credentials cached
    with pytest.raises(SessionActionFailed, match="logout failed: could not read the session of AB1234"):
        invoke({"action": "logout", "user_id": "AB1234"})


def test_failures_name_no_token_in_logs_or_messages(
    invoke: Invoke,
    sim: KiteSimulator,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    service_logs: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    session = logged_in(sim, prefix)
    monkeypatch.setenv("KITE_API_ROOT", f"http://127.0.0.1:{closed_port()}")
    reset_layer_caches()
    messages = []
    for action in ("logout", "renew"):
        with pytest.raises(SessionActionFailed) as failure:
            invoke({"action": action, "user_id": "AB1234"})
        messages.append(str(failure.value))
    captured = capsys.readouterr()
    output = "\n".join(messages) + service_logs.getvalue() + captured.out + captured.err
    assert "session action failed" in output  # the capture did see the log line
    for secret in (session.access_token, session.refresh_token, session.public_token, TEST_API_SECRET):
        assert secret not in output


class ShortContext(FakeLambdaContext):
    """An invocation with 7 s left: Kite calls must end 5 s before that."""

    def get_remaining_time_in_millis(self) -> int:
        return 7_000


def test_a_slow_kite_fails_the_logout_before_lambda_would_stop_it(
    sim: KiteSimulator, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged_in(sim, prefix)
    monkeypatch.setenv("KITE_READ_TIMEOUT_SECONDS", "30")  # only the invocation's deadline is left
    reset_layer_caches()
    sim.set_delay(6)
    app = load_function("session")
    started = time.monotonic()
    with pytest.raises(SessionActionFailed, match="Kite did not log out the session of AB1234"):
        app.handler({"action": "logout", "user_id": "AB1234"}, ShortContext())
    assert time.monotonic() - started < 3.5
    assert stored(prefix)["status"] == "active"


class NineSecondsLeft(FakeLambdaContext):
    def get_remaining_time_in_millis(self) -> int:
        return 9_000


@pytest.mark.parametrize("action", ["expire", "check"])
def test_a_trickling_secrets_manager_fails_the_run_before_lambda_would_stop_it(
    sim: KiteSimulator, prefix: str, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    # Each byte comes within the read timeout, so only the invocation's deadline ends the listing.
    with TricklingEndpoint(interval=0.5) as trickling:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", trickling.url)
        reset_layer_caches()
        app = load_function("session")
        started = time.monotonic()
        # check reads the app's credentials first, expire lists the sessions first.
        expected = "credentials secret" if action == "check" else "list sessions"
        with pytest.raises(SessionActionFailed, match=f"could not (read the )?{expected} in time"):
            app.handler({"action": action}, NineSecondsLeft())
        assert time.monotonic() - started < 9 - 4
