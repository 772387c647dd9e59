"""kitehooks.client as a user's function uses it: sessions stored in a moto server, the official
``kiteconnect`` client against the Kite simulator, and the expiry hook reaching SessionFunction
through the local gateway's Lambda Invoke API (boto3, AWS_ENDPOINT_URL_LAMBDA)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import kiteconnect
import pytest
from kiteconnect import KiteConnect

from kitehooks import client as consumer
from kitehooks import clock
from kitehooks.client import (
    SESSION_CACHE_SECONDS,
    SessionStoreUnreachable,
    SessionUnavailable,
    get_session,
    kite_connect,
)
from kitehooks.config import ConfigurationError
from kitehooks.sessions.store import KiteSession, SessionStore, new_session
from local.gateway import LocalGateway
from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues
from tests.conftest import (
    REGION,
    TEMPLATE,
    TEST_API_KEY,
    TEST_API_SECRET,
    closed_port,
    fresh_request_token,
    reset_layer_caches,
)

USER = "AB1234"
WAIT_SECONDS = 30


def forget_everything() -> None:
    reset_layer_caches()
    consumer.forget()


@pytest.fixture
def prefix(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    prefix = f"kitehooks-client-{uuid.uuid4().hex[:8]}/sessions"
    monkeypatch.setenv("KITEHOOKS_SESSION_PREFIX", prefix)
    monkeypatch.setenv("KITEHOOKS_SESSION_FUNCTION", "SessionFunction")
    forget_everything()
    yield prefix
    forget_everything()


@pytest.fixture
def kite_root(sim: KiteSimulator, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KITE_API_ROOT", sim.url)
    return sim.url


class FrozenClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen_clock = FrozenClock()
    monkeypatch.setattr(clock, "utc_now", frozen_clock)
    return frozen_clock


def store(prefix: str) -> SessionStore:
    return SessionStore(boto3.client("secretsmanager"), prefix)


def logged_in(sim: KiteSimulator, prefix: str) -> KiteSession:
    """A live session, logged in with the official client and stored as the callback stores it."""
    login = KiteConnect(api_key=TEST_API_KEY, root=sim.url)
    data = login.generate_session(fresh_request_token(sim), api_secret=TEST_API_SECRET)
    session = new_session(
        USER,
        str(data.get("user_name", "")),
        TEST_API_KEY,
        str(data["access_token"]),
        str(data.get("public_token") or ""),
        str(data.get("refresh_token") or ""),
        str(data["login_time"]),
        datetime.now(UTC),
    )
    store(prefix).put(session)
    return session


def stored_status(prefix: str) -> str:
    value = boto3.client("secretsmanager").get_secret_value(SecretId=f"{prefix}/{USER}")
    status: str = json.loads(value["SecretString"])["status"]
    return status


# ---------------------------------------------------------------------------------------------
# Reuse with the official client


def test_kite_connect_calls_kite_with_the_stored_session(
    sim: KiteSimulator, prefix: str, kite_root: str
) -> None:
    session = logged_in(sim, prefix)
    kite = kite_connect(USER)
    assert isinstance(kite, KiteConnect)
    assert kite.root == sim.url
    assert kite.api_key == TEST_API_KEY
    assert kite.access_token == session.access_token
    assert kite.profile()["user_id"] == USER
    assert sim.api_requests()[-1].path == "/user/profile"


def test_kite_connect_refuses_a_user_without_a_session(
    sim: KiteSimulator, prefix: str, kite_root: str
) -> None:
    with pytest.raises(SessionUnavailable) as unavailable:
        kite_connect(USER)
    assert unavailable.value.status == "missing"
    assert not [request for request in sim.api_requests() if request.path == "/user/profile"]


def test_kite_connect_needs_the_session_function_and_the_package(
    sim: KiteSimulator, prefix: str, kite_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged_in(sim, prefix)
    monkeypatch.delenv("KITEHOOKS_SESSION_FUNCTION")
    with pytest.raises(ConfigurationError, match="KITEHOOKS_SESSION_FUNCTION is not set"):
        kite_connect(USER)
    monkeypatch.setenv("KITEHOOKS_SESSION_FUNCTION", "SessionFunction")
    monkeypatch.setitem(sys.modules, "kiteconnect", None)  # as in a function that did not install it
    with pytest.raises(ModuleNotFoundError, match="needs the kiteconnect package"):
        kite_connect(USER)


def test_the_layer_neither_carries_nor_imports_kiteconnect() -> None:
    layer = TEMPLATE.parent / "layers" / "kitehooks"
    assert "kiteconnect" not in (layer / "requirements.txt").read_text().lower()
    probe = "import sys, kitehooks.client; print('kiteconnect' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path[:0] = [{str(layer)!r}]; {probe}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert loaded.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# get_session: caching, expiry, statuses


def test_a_session_is_cached_for_a_minute(sim: KiteSimulator, prefix: str, frozen: FrozenClock) -> None:
    session = logged_in(sim, prefix)
    assert get_session(USER) == session
    # Logged out elsewhere: within the cache time the container keeps its copy, then reads again.
    store(prefix).put(replace(session, status="revoked", access_token=""))
    frozen.advance(SESSION_CACHE_SECONDS - 1)
    assert get_session(USER) == session
    frozen.advance(1)
    with pytest.raises(SessionUnavailable) as unavailable:
        get_session(USER)
    assert unavailable.value.status == "revoked"


def test_a_cached_session_is_never_returned_at_its_expiry(
    sim: KiteSimulator, prefix: str, frozen: FrozenClock
) -> None:
    session = replace(logged_in(sim, prefix), expires_at=(frozen.now + timedelta(seconds=30)).isoformat())
    store(prefix).put(session)
    assert get_session(USER) == session
    frozen.advance(29)
    assert get_session(USER) == session
    frozen.advance(1)  # 06:00 IST: Kite has ended it, though the store still says active
    with pytest.raises(SessionUnavailable) as unavailable:
        get_session(USER)
    assert unavailable.value.status == "expired"
    assert stored_status(prefix) == "active"


def test_a_new_login_is_read_after_the_old_session_expired(
    sim: KiteSimulator, prefix: str, frozen: FrozenClock
) -> None:
    old = replace(logged_in(sim, prefix), expires_at=(frozen.now + timedelta(seconds=10)).isoformat())
    store(prefix).put(old)
    assert get_session(USER) == old
    fresh = logged_in(sim, prefix)
    frozen.advance(10)
    assert get_session(USER) == fresh


def test_forget_makes_the_next_call_read_the_store(
    sim: KiteSimulator, prefix: str, frozen: FrozenClock
) -> None:
    session = logged_in(sim, prefix)
    get_session(USER)
    store(prefix).put(replace(session, status="expired", access_token=""))
    assert get_session(USER) == session
    consumer.forget(USER)
    with pytest.raises(SessionUnavailable) as unavailable:
        get_session(USER)
    assert unavailable.value.status == "expired"


@pytest.mark.parametrize(
    ("stored", "status"),
    [("revoked", "revoked"), ("expired", "expired"), ("active-past-expiry", "expired"), (None, "missing")],
)
def test_session_unavailable_says_why(
    sim: KiteSimulator, prefix: str, stored: str | None, status: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="kitehooks")
    if stored is not None:
        session = logged_in(sim, prefix)
        past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        changed = {
            "revoked": replace(session, status="revoked"),
            "expired": replace(session, status="expired"),
            "active-past-expiry": replace(session, expires_at=past),
        }[stored]
        store(prefix).put(changed)
    with pytest.raises(SessionUnavailable) as unavailable:
        get_session(USER)
    assert unavailable.value.status == status
    assert unavailable.value.user_id == USER
    assert f"no active Kite session for AB1234 ({status}): " in str(unavailable.value)
    if stored is not None:
        assert session.access_token not in str(unavailable.value)
        assert session.access_token not in caplog.text


def test_an_unreachable_store_is_not_a_missing_session(
    sim: KiteSimulator, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = logged_in(sim, prefix)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    forget_everything()
    with pytest.raises(
        SessionStoreUnreachable, match=rf"could not read the session of {USER} \(\w+"
    ) as failed:
        get_session(USER)
    assert not isinstance(failed.value, SessionUnavailable)
    assert session.access_token not in str(failed.value)


def test_configuration_and_user_id_mistakes_are_clear(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="not a Kite user id"):
        get_session("../other-secret")
    monkeypatch.delenv("KITEHOOKS_SESSION_PREFIX")
    with pytest.raises(ConfigurationError, match="KITEHOOKS_SESSION_PREFIX is not set"):
        get_session(USER)


def test_no_region_is_a_configuration_error(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lambda sets the region; a shell running the same code may not (boto3 reads AWS_DEFAULT_REGION).
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    forget_everything()
    with pytest.raises(
        ConfigurationError, match="cannot make a Secrets Manager client: You must specify a region"
    ):
        get_session(USER)


# ---------------------------------------------------------------------------------------------
# The expiry hook, through the local Invoke API to SessionFunction


@pytest.fixture
def local_lambda(
    stack: ResourceValues,
    sim: KiteSimulator,
    prefix: str,
    kite_root: str,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LocalGateway]:
    """The template's functions on a local gateway, SessionFunction among them, as `make dev` runs them."""
    with LocalGateway(
        TEMPLATE,
        port=0,
        resources=stack,
        parameter_overrides={
            "AwsEndpointUrl": moto_endpoint,
            "KiteApiRoot": sim.url,
            "KiteLoginUrl": f"{sim.url}/connect/login",
            "SessionPrefix": prefix,
        },
        extra_env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION},
        workers_per_function=1,
    ) as gateway:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", gateway.url)
        forget_everything()
        yield gateway


def kill_at_kite(sim: KiteSimulator, access_token: str) -> None:
    """End the token at Kite behind kitehooks' back, as a login elsewhere does."""
    assert sim.kill_access_tokens(access_token) == 1


def test_a_killed_token_is_reported_and_the_session_ends(
    sim: KiteSimulator,
    prefix: str,
    local_lambda: LocalGateway,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="kitehooks")
    session = logged_in(sim, prefix)
    kite = kite_connect(USER)
    assert kite.profile()["user_id"] == USER
    assert get_session(USER) == session  # cached now

    kill_at_kite(sim, session.access_token)
    started = time.monotonic()
    with pytest.raises(kiteconnect.exceptions.TokenException) as refused:
        kite.profile()
    # The report is asynchronous (Event): the user's call is not held for SessionFunction's check.
    assert time.monotonic() - started < 2

    deadline = time.monotonic() + WAIT_SECONDS
    while stored_status(prefix) == "active":
        assert time.monotonic() < deadline, "SessionFunction never marked the dead session"
        time.sleep(0.2)
    assert stored_status(prefix) == "expired"
    # The hook dropped the cached copy: the next call sees the end at once, not a minute later.
    with pytest.raises(SessionUnavailable) as unavailable:
        kite_connect(USER)
    assert unavailable.value.status == "expired"
    assert "reported the dead Kite session of AB1234 to SessionFunction" in caplog.text

    console = capfd.readouterr()
    for text in (caplog.text, console.out, console.err, str(refused.value), str(unavailable.value)):
        assert session.access_token not in text
        assert TEST_API_SECRET not in text


def test_a_failed_report_is_logged_once_and_the_callers_error_stays_kites(
    sim: KiteSimulator,
    prefix: str,
    local_lambda: LocalGateway,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="kitehooks")
    monkeypatch.setenv("KITEHOOKS_SESSION_FUNCTION", "NoSuchFunction")
    session = logged_in(sim, prefix)
    kite = kite_connect(USER)
    kill_at_kite(sim, session.access_token)
    for _ in range(2):  # code that retries a dead token reports it once per client
        with pytest.raises(kiteconnect.exceptions.TokenException):
            kite.profile()
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert [record.getMessage() for record in warnings] == [
        "could not report the dead Kite session of AB1234 to NoSuchFunction (ResourceNotFoundException)"
    ]
    assert stored_status(prefix) == "active"
    assert session.access_token not in caplog.text


def test_users_code_reaches_session_function_with_boto3(local_lambda: LocalGateway, prefix: str) -> None:
    lambda_client: Any = boto3.client("lambda", region_name=REGION)
    answer = lambda_client.invoke(
        FunctionName=os.environ["KITEHOOKS_SESSION_FUNCTION"],
        Payload=json.dumps({"action": "logout", "user_id": USER}),
    )
    assert answer["StatusCode"] == 200
    assert "FunctionError" not in answer
    result = json.loads(answer["Payload"].read())
    assert result["ok"] is False
    assert "no session stored for AB1234" in result["detail"]["error"]
