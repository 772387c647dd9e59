"""The session function (no public route) against the Kite simulator and a moto server."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from kitehooks import kite
from kitehooks.sessions import KiteSession, new_session
from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues
from tests.conftest import (
    TEST_API_KEY,
    TEST_API_SECRET,
    FakeLambdaContext,
    fresh_request_token,
    load_function,
    reset_layer_caches,
)

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture
def prefix(stack: ResourceValues, sim: KiteSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    prefix = f"kitehooks-test-{uuid.uuid4().hex[:8]}/sessions"
    monkeypatch.setenv("API_CREDENTIALS_SECRET_ID", stack["ApiCredentialsSecret"]["Ref"])
    monkeypatch.setenv("KITE_API_ROOT", sim.url)
    monkeypatch.setenv("SESSION_PREFIX", prefix)
    reset_layer_caches()
    yield prefix
    reset_layer_caches()


@pytest.fixture
def invoke(prefix: str) -> Invoke:
    app = load_function("session")

    def call(event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = app.handler(event, FakeLambdaContext())
        return result

    return call


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
    after = stored(prefix)
    assert (after["status"], after["access_token"], after["refresh_token"]) == ("revoked", "", "")
    assert invoke({"action": "logout", "user_id": "AB1234"})["ok"]  # nothing left to end: still fine


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
        ({"action": "logout", "user_id": "../etc"}, "user_id must be"),
        ({"action": "logout", "user_id": "ZZ0000"}, "no session stored"),
    ],
)
def test_bad_requests_get_a_clear_error(invoke: Invoke, event: dict[str, Any], message: str) -> None:
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
