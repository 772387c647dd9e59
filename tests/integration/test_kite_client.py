"""The layer's Kite client against the Kite simulator: every call, and Kite's errors as typed exceptions."""

from __future__ import annotations

import pytest

from kitehooks.kite import client as kite
from local.kite_simulator import KiteSimulator
from tests.conftest import TEST_API_KEY, TEST_API_SECRET, closed_port, fresh_request_token


def test_exchange_renew_and_invalidate(sim: KiteSimulator) -> None:
    client = kite.KiteClient(sim.url, TEST_API_KEY)
    grant = client.exchange_request_token(fresh_request_token(sim), TEST_API_SECRET)
    assert (grant.user_id, grant.api_key) == ("AB1234", TEST_API_KEY)
    assert grant.access_token in sim.active_access_tokens()
    assert grant.access_token not in repr(grant)

    renewed = client.renew_access_token(grant.refresh_token, TEST_API_SECRET)
    assert renewed["access_token"] in sim.active_access_tokens()
    assert grant.access_token not in sim.active_access_tokens()

    client.invalidate_access_token(renewed["access_token"])
    assert sim.active_access_tokens() == []
    with pytest.raises(kite.KiteTokenError):
        client.invalidate_access_token(renewed["access_token"])


def test_wrong_secret_is_a_token_error_naming_no_token(sim: KiteSimulator) -> None:
    token = fresh_request_token(sim)
    with pytest.raises(kite.KiteTokenError) as raised:
        kite.KiteClient(sim.url, TEST_API_KEY).exchange_request_token(token, "wrong-secret")
    assert raised.value.http_status == 403
    assert raised.value.error_type == "TokenException"
    assert token not in str(raised.value)


def test_missing_field_is_an_input_error(sim: KiteSimulator) -> None:
    with pytest.raises(kite.KiteInputError):
        kite.KiteClient(sim.url, TEST_API_KEY).exchange_request_token("", TEST_API_SECRET)


def test_unknown_path_is_a_server_error_with_kites_type(sim: KiteSimulator) -> None:
    client = kite.KiteClient(sim.url + "/nowhere", TEST_API_KEY)
    with pytest.raises(kite.KiteServerError) as raised:
        client.exchange_request_token(fresh_request_token(sim), TEST_API_SECRET)
    assert raised.value.error_type == "GeneralException"


def test_html_answer_is_a_bad_response(sim: KiteSimulator) -> None:
    sim.set_html_errors(True)
    with pytest.raises(kite.KiteBadResponse, match="not JSON"):
        kite.KiteClient(sim.url, TEST_API_KEY).exchange_request_token("a" * 32, TEST_API_SECRET)


def test_slow_kite_is_a_timeout_and_down_kite_is_unavailable(sim: KiteSimulator) -> None:
    sim.set_delay(1.0)
    with pytest.raises(kite.KiteTimeout):
        kite.KiteClient(sim.url, TEST_API_KEY, timeout=(1.0, 0.3)).exchange_request_token(
            "a" * 32, TEST_API_SECRET
        )
    with pytest.raises(kite.KiteUnavailable) as raised:
        kite.KiteClient(f"http://127.0.0.1:{closed_port()}", TEST_API_KEY).exchange_request_token(
            "secretish" * 4, TEST_API_SECRET
        )
    assert "secretish" not in str(raised.value)
