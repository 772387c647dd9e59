"""LogLevel=DEBUG must not put secrets in the logs: Lambda then sets the root logger to DEBUG,
where botocore logs request and response bodies and urllib3 logs URLs with their query strings."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from kitehooks import aws
from kitehooks.kite import client as kite
from kitehooks.sessions.store import SessionStore, new_session
from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues
from local.samples import http_api_event, postback_body
from tests.conftest import (
    TEST_API_KEY,
    TEST_API_SECRET,
    FakeLambdaContext,
    fresh_request_token,
    load_function,
    reset_layer_caches,
)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # the root logger, as Lambda's runtime sets it at DEBUG
    return caplog


def test_a_postback_at_debug_level_logs_no_api_secret(
    stack: ResourceValues, monkeypatch: pytest.MonkeyPatch, debug_logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ORDER_UPDATES_QUEUE_URL", stack["OrderUpdatesQueue"]["Ref"])
    monkeypatch.setenv("UNDELIVERED_BUCKET", stack["UndeliveredPostbacksBucket"]["Ref"])
    monkeypatch.setenv("API_CREDENTIALS_SECRET_ID", stack["ApiCredentialsSecret"]["Ref"])
    reset_layer_caches()
    app = load_function("postback")
    event = http_api_event("POST", "/postback", postback_body(TEST_API_SECRET))
    assert app.handler(event, FakeLambdaContext())["statusCode"] == 200
    assert debug_logs.records  # the level really was DEBUG: something was logged
    assert TEST_API_SECRET not in debug_logs.text
    reset_layer_caches()


def test_storing_and_ending_a_session_at_debug_level_logs_no_token(
    stack: ResourceValues, sim: KiteSimulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    reset_layer_caches()
    client = kite.KiteClient(sim.url, TEST_API_KEY)
    grant = client.exchange_request_token(fresh_request_token(sim), TEST_API_SECRET)
    session = new_session(
        user_id=grant.user_id,
        user_name=grant.user_name,
        api_key=grant.api_key,
        access_token=grant.access_token,
        public_token=grant.public_token,
        refresh_token=grant.refresh_token,
        login_time=grant.login_time,
        now=datetime.now(UTC),
    )
    prefix = f"{stack['ApiCredentialsSecret']['Name'].partition('/')[0]}/sessions"
    SessionStore(aws.secretsmanager_client(), prefix).put(session)
    client.invalidate_access_token(grant.access_token)
    assert grant.access_token not in debug_logs.text
    assert TEST_API_SECRET not in debug_logs.text
    reset_layer_caches()
