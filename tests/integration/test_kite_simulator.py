"""The Kite simulator against the official ``kiteconnect`` client, over real HTTP.

If the official client can log in, renew and log out against the simulator, the simulator
speaks Kite's protocol closely enough for the rest of the tests to trust it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect.exceptions import DataException, InputException, TokenException

from local.kite_simulator import KiteSimulator, SimulatorStartError, main

API_KEY = "sim_test_key"
API_SECRET = "sim_test_secret_6f1d"
REDIRECT_URL = "http://127.0.0.1:3999/callback"
TIMEOUT = 5.0
KITE_HEADERS = {"X-Kite-Version": "3"}
PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOKEN_RE = re.compile(r"^[A-Za-z0-9]{32}$")
IST_OFFSET = timedelta(hours=5, minutes=30)

# The keys of a real /session/token response (Kite's documented sample).
SESSION_KEYS = {
    "user_type",
    "email",
    "user_name",
    "user_shortname",
    "broker",
    "exchanges",
    "products",
    "order_types",
    "avatar_url",
    "user_id",
    "api_key",
    "access_token",
    "public_token",
    "enctoken",
    "refresh_token",
    "silo",
    "login_time",
    "meta",
}


def _simulator(**overrides: Any) -> KiteSimulator:
    options: dict[str, Any] = {
        "api_key": API_KEY,
        "api_secret": API_SECRET,
        "redirect_url": REDIRECT_URL,
        "approved_platform": True,
    }
    options.update(overrides)
    return KiteSimulator(**options)


@pytest.fixture
def sim() -> Iterator[KiteSimulator]:
    # An approved platform: Kite issues refresh tokens, so renewal and revocation can be tested.
    with _simulator(approved_platform=True) as simulator:
        yield simulator


@pytest.fixture
def kite(sim: KiteSimulator) -> KiteConnect:
    return KiteConnect(api_key=API_KEY, root=sim.url, timeout=TIMEOUT)


def _login(sim: KiteSimulator, redirect_params: str | None = None) -> list[tuple[str, str]]:
    """Follow the login page like a browser would, stopping at the redirect; returns its query."""
    params = {"v": "3", "api_key": API_KEY}
    if redirect_params is not None:
        params["redirect_params"] = redirect_params
    response = requests.get(f"{sim.url}/connect/login", params=params, allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URL + "?")
    return parse_qsl(urlsplit(location).query, keep_blank_values=True)


def _request_token(sim: KiteSimulator) -> str:
    token = dict(_login(sim))["request_token"]
    assert TOKEN_RE.match(token)
    return token


def _session(sim: KiteSimulator, kite: KiteConnect) -> dict[str, Any]:
    session: dict[str, Any] = kite.generate_session(_request_token(sim), api_secret=API_SECRET)
    return session


# -- login page ----------------------------------------------------------------------------------


def test_login_redirects_with_a_fresh_request_token(sim: KiteSimulator) -> None:
    first = _login(sim)
    assert [key for key, _ in first] == ["action", "type", "status", "request_token"]
    assert dict(first)["action"] == "login"
    assert dict(first)["type"] == "login"
    assert dict(first)["status"] == "success"
    second = dict(_login(sim))["request_token"]
    assert dict(first)["request_token"] != second
    assert sim.issued_request_tokens() == [dict(first)["request_token"], second]


def test_redirect_params_come_back_after_kites_own(sim: KiteSimulator) -> None:
    query = _login(sim, redirect_params="state=abc%20123&next=%2Forders")
    assert [key for key, _ in query] == ["action", "type", "status", "request_token", "state", "next"]
    assert dict(query)["state"] == "abc 123"
    assert dict(query)["next"] == "/orders"


@pytest.mark.parametrize("api_key", ["someone_elses_key", None])
def test_login_with_wrong_or_missing_api_key_shows_an_html_error(
    sim: KiteSimulator, api_key: str | None
) -> None:
    params = {"v": "3"} if api_key is None else {"v": "3", "api_key": api_key}
    response = requests.get(f"{sim.url}/connect/login", params=params, allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/html")
    assert "api_key" in response.text
    assert sim.issued_request_tokens() == []


def test_cancelled_login_redirects_without_a_request_token(sim: KiteSimulator) -> None:
    sim.set_login_outcome("cancelled")
    query = dict(_login(sim, redirect_params="state=s1"))
    assert query["status"] == "cancelled"
    assert "request_token" not in query
    assert query["state"] == "s1"
    assert sim.issued_request_tokens() == []


# -- sessions with the official client -----------------------------------------------------------


def test_generate_session_with_the_official_client(sim: KiteSimulator, kite: KiteConnect) -> None:
    session = _session(sim, kite)
    assert set(session) >= SESSION_KEYS
    assert session["api_key"] == API_KEY
    assert session["user_id"] == "AB1234"
    assert session["user_name"]
    for name in ("access_token", "public_token", "refresh_token"):
        assert TOKEN_RE.match(session[name]), name
    assert len({session["access_token"], session["public_token"], session["refresh_token"]}) == 3
    # The client parses login_time only when it is "YYYY-MM-DD HH:MM:SS"; it is IST wall time.
    assert isinstance(session["login_time"], datetime)
    ist_now = datetime.now(UTC).replace(tzinfo=None) + IST_OFFSET
    assert abs(ist_now - session["login_time"]) < timedelta(minutes=1)
    assert kite.access_token == session["access_token"]
    assert sim.active_access_tokens() == [session["access_token"]]
    assert sim.active_refresh_tokens() == [session["refresh_token"]]


def test_exchange_request_reaches_kite_in_kites_form(sim: KiteSimulator, kite: KiteConnect) -> None:
    assert sim.api_requests() == []
    request_token = _request_token(sim)
    kite.generate_session(request_token, api_secret=API_SECRET)
    [request] = sim.api_requests()
    assert (request.method, request.path) == ("POST", "/session/token")
    expected = hashlib.sha256((API_KEY + request_token + API_SECRET).encode()).hexdigest()
    assert dict(request.form) == {"api_key": API_KEY, "request_token": request_token, "checksum": expected}


def test_profile_after_set_access_token(sim: KiteSimulator, kite: KiteConnect) -> None:
    session = _session(sim, kite)
    other = KiteConnect(api_key=API_KEY, root=sim.url, timeout=TIMEOUT)
    other.set_access_token(session["access_token"])
    profile = other.profile()
    assert profile["user_id"] == "AB1234"
    assert profile["broker"] == "ZERODHA"
    assert profile["email"]
    assert sim.api_requests()[-1].path == "/user/profile"


def test_profile_without_or_with_a_bogus_token_is_a_token_exception(sim: KiteSimulator) -> None:
    anonymous = KiteConnect(api_key=API_KEY, root=sim.url, timeout=TIMEOUT)
    with pytest.raises(TokenException) as excinfo:
        anonymous.profile()
    assert excinfo.value.code == 403
    anonymous.set_access_token("x" * 32)
    with pytest.raises(TokenException):
        anonymous.profile()


def test_renew_access_token_replaces_the_old_one(sim: KiteSimulator, kite: KiteConnect) -> None:
    session = _session(sim, kite)
    renewed = kite.renew_access_token(session["refresh_token"], API_SECRET)
    assert TOKEN_RE.match(renewed["access_token"])
    assert renewed["access_token"] != session["access_token"]
    assert kite.access_token == renewed["access_token"]
    assert kite.profile()["user_id"] == "AB1234"
    old = KiteConnect(api_key=API_KEY, root=sim.url, timeout=TIMEOUT)
    old.set_access_token(session["access_token"])
    with pytest.raises(TokenException):
        old.profile()
    assert sim.active_access_tokens() == [renewed["access_token"]]


def test_renew_with_a_wrong_secret_is_a_token_exception(sim: KiteSimulator, kite: KiteConnect) -> None:
    session = _session(sim, kite)
    with pytest.raises(TokenException):
        kite.renew_access_token(session["refresh_token"], "not_the_secret")
    assert sim.active_access_tokens() == [session["access_token"]]


def test_invalidate_access_token_ends_the_session(sim: KiteSimulator, kite: KiteConnect) -> None:
    session = _session(sim, kite)
    assert kite.invalidate_access_token() is True
    with pytest.raises(TokenException):
        kite.profile()
    with pytest.raises(TokenException):
        kite.invalidate_access_token(session["access_token"])
    assert sim.active_access_tokens() == []
    [*_, delete] = sim.api_requests()
    assert (delete.method, delete.path) == ("DELETE", "/session/token")
    assert delete.query["access_token"] == session["access_token"]


def test_invalidate_refresh_token_stops_renewals(sim: KiteSimulator, kite: KiteConnect) -> None:
    session = _session(sim, kite)
    assert kite.invalidate_refresh_token(session["refresh_token"]) is True
    assert sim.active_refresh_tokens() == []
    with pytest.raises(TokenException):
        kite.renew_access_token(session["refresh_token"], API_SECRET)
    with pytest.raises(TokenException):
        kite.invalidate_refresh_token(session["refresh_token"])


def test_no_refresh_token_when_the_app_is_not_allowed_one() -> None:
    with _simulator(approved_platform=False) as sim:
        kite = KiteConnect(api_key=API_KEY, root=sim.url, timeout=TIMEOUT)
        session = _session(sim, kite)
        assert session["refresh_token"] == ""
        assert sim.active_refresh_tokens() == []
        with pytest.raises(InputException):
            kite.renew_access_token("", API_SECRET)


# -- request token rules -------------------------------------------------------------------------


def test_wrong_api_secret_is_a_token_exception_and_keeps_the_token(
    sim: KiteSimulator, kite: KiteConnect
) -> None:
    request_token = _request_token(sim)
    with pytest.raises(TokenException) as excinfo:
        kite.generate_session(request_token, api_secret="not_the_secret")
    assert excinfo.value.code == 403
    assert sim.active_access_tokens() == []
    # A failed checksum does not consume the token: only a caller who knows the secret can.
    assert kite.generate_session(request_token, api_secret=API_SECRET)["access_token"]


def test_wrong_api_key_is_a_token_exception(sim: KiteSimulator) -> None:
    stranger = KiteConnect(api_key="someone_elses_key", root=sim.url, timeout=TIMEOUT)
    with pytest.raises(TokenException):
        stranger.generate_session(_request_token(sim), api_secret=API_SECRET)


def test_reused_request_token_is_a_token_exception(sim: KiteSimulator, kite: KiteConnect) -> None:
    request_token = _request_token(sim)
    kite.generate_session(request_token, api_secret=API_SECRET)
    with pytest.raises(TokenException, match="Token is invalid or has expired"):
        kite.generate_session(request_token, api_secret=API_SECRET)
    assert len(sim.active_access_tokens()) == 1


def test_unknown_request_token_is_a_token_exception(sim: KiteSimulator, kite: KiteConnect) -> None:
    with pytest.raises(TokenException, match="Token is invalid or has expired"):
        kite.generate_session("A" * 32, api_secret=API_SECRET)


def test_expired_request_token_is_a_token_exception() -> None:
    with _simulator(request_token_ttl=0.2) as sim:
        kite = KiteConnect(api_key=API_KEY, root=sim.url, timeout=TIMEOUT)
        request_token = _request_token(sim)
        time.sleep(0.3)
        with pytest.raises(TokenException, match="Token is invalid or has expired"):
            kite.generate_session(request_token, api_secret=API_SECRET)
        assert sim.active_access_tokens() == []


# -- protocol details ----------------------------------------------------------------------------


def test_missing_fields_are_an_input_exception(sim: KiteSimulator) -> None:
    response = requests.post(
        f"{sim.url}/session/token", data={"api_key": API_KEY}, headers=KITE_HEADERS, timeout=TIMEOUT
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "error"
    assert body["error_type"] == "InputException"
    assert body["data"] is None
    assert "request_token" in body["message"]


def test_missing_kite_version_header_is_an_input_exception(sim: KiteSimulator, kite: KiteConnect) -> None:
    session = _session(sim, kite)
    headers = {"Authorization": f"token {API_KEY}:{session['access_token']}"}
    response = requests.get(f"{sim.url}/user/profile", headers=headers, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error_type"] == "InputException"
    ok = requests.get(f"{sim.url}/user/profile", headers={**headers, **KITE_HEADERS}, timeout=TIMEOUT)
    assert ok.status_code == 200
    assert ok.json()["data"]["user_id"] == "AB1234"


def test_unknown_path_is_a_json_404(sim: KiteSimulator) -> None:
    response = requests.get(f"{sim.url}/no/such/route", headers=KITE_HEADERS, timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "status": "error",
        "message": "Route not found.",
        "data": None,
        "error_type": "GeneralException",
    }


def test_request_log_has_no_tokens_or_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kitehooks.kite_simulator")
    with _simulator(log_requests=True) as sim:
        kite = KiteConnect(api_key=API_KEY, root=sim.url, timeout=TIMEOUT)
        session = _session(sim, kite)
        kite.invalidate_access_token()
        request_token = sim.issued_request_tokens()[0]
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "POST /session/token 200" in text
    assert "DELETE /session/token 200" in text
    for value in (API_SECRET, request_token, session["access_token"], session["refresh_token"]):
        assert value not in text


# -- test controls -------------------------------------------------------------------------------


def test_html_error_mode_answers_like_a_proxy(sim: KiteSimulator, kite: KiteConnect) -> None:
    request_token = _request_token(sim)
    sim.set_html_errors(True)
    raw = requests.post(f"{sim.url}/session/token", data={}, headers=KITE_HEADERS, timeout=TIMEOUT)
    assert raw.status_code == 502
    assert raw.headers["Content-Type"].startswith("text/html")
    assert "<html>" in raw.text
    # The official client refuses a non-JSON answer with DataException.
    with pytest.raises(DataException):
        kite.generate_session(request_token, api_secret=API_SECRET)
    sim.set_html_errors(False)
    # The proxy answered, so the token was never consumed.
    assert kite.generate_session(request_token, api_secret=API_SECRET)["access_token"]


def test_delay_mode_makes_kite_slow(sim: KiteSimulator) -> None:
    sim.set_delay(0.4)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{sim.url}/user/profile", headers=KITE_HEADERS, timeout=(TIMEOUT, 0.1))
    started = time.perf_counter()
    response = requests.get(f"{sim.url}/user/profile", headers=KITE_HEADERS, timeout=TIMEOUT)
    assert time.perf_counter() - started >= 0.4
    assert response.status_code == 403
    sim.set_delay(0)
    started = time.perf_counter()
    requests.get(f"{sim.url}/user/profile", headers=KITE_HEADERS, timeout=TIMEOUT)
    assert time.perf_counter() - started < 0.3


def test_control_over_http(sim: KiteSimulator) -> None:
    controls = {
        "delay_seconds": 0.05,
        "html_errors": True,
        "login_status": "cancelled",
        "approved_platform": False,
    }
    response = requests.post(f"{sim.url}/__sim/control", json=controls, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {"status": "success", "data": controls}
    assert "request_token" not in dict(_login(sim))
    api = requests.get(f"{sim.url}/user/profile", headers=KITE_HEADERS, timeout=TIMEOUT)
    assert api.status_code == 502

    # A subset changes only what it names.
    response = requests.post(f"{sim.url}/__sim/control", json={"html_errors": False}, timeout=TIMEOUT)
    assert response.json()["data"] == {**controls, "html_errors": False}

    # A bad body is refused and changes nothing.
    for bad in (
        {"delay_seconds": -1, "login_status": "success"},
        {"delay": 1},
        [1],
        {"approved_platform": "yes", "html_errors": True},
    ):
        refused = requests.post(f"{sim.url}/__sim/control", json=bad, timeout=TIMEOUT)
        assert refused.status_code == 400
        assert refused.json()["error_type"] == "InputException"
    state = requests.get(f"{sim.url}/__sim/state", timeout=TIMEOUT).json()["data"]
    assert state["controls"] == {**controls, "html_errors": False}

    requests.post(
        f"{sim.url}/__sim/control", json={"delay_seconds": 0, "login_status": "success"}, timeout=TIMEOUT
    )
    assert dict(_login(sim))["status"] == "success"


def test_state_never_contains_the_secret(sim: KiteSimulator, kite: KiteConnect) -> None:
    session = _session(sim, kite)
    # Even a client that wrongly posts the secret does not get it echoed back.
    requests.post(
        f"{sim.url}/session/token",
        data={"api_key": API_KEY, "api_secret": API_SECRET},
        headers=KITE_HEADERS,
        timeout=TIMEOUT,
    )
    response = requests.get(f"{sim.url}/__sim/state", timeout=TIMEOUT)
    assert response.status_code == 200
    assert API_SECRET not in response.text
    state = response.json()["data"]
    assert state["counts"] == {
        "issued_request_tokens": 1,
        "pending_request_tokens": 0,
        "active_access_tokens": 1,
        "active_refresh_tokens": 1,
        "api_requests": 2,
    }
    assert state["active_access_tokens"] == [session["access_token"]]
    assert [(r["method"], r["path"]) for r in state["api_requests"]] == [("POST", "/session/token")] * 2
    assert API_SECRET not in repr(sim)


def test_a_second_simulator_on_the_same_port_fails_clearly(
    sim: KiteSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SimulatorStartError, match=f"127.0.0.1:{sim.port}: address already in use"):
        _simulator(port=sim.port).start()
    assert main(["--port", str(sim.port), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "address already in use" in err
    # The first simulator is unharmed.
    assert dict(_login(sim))["status"] == "success"


def test_cli_serves_with_env_credentials_and_stops_on_sigterm() -> None:
    env = {
        **os.environ,
        "KITE_API_KEY": API_KEY,
        "KITE_API_SECRET": API_SECRET,
        "KITE_SIM_USER_ID": "ZX9876",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "local.kite_simulator", "--port", "0", "--redirect-url", REDIRECT_URL]
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", first_line)
        assert match, first_line
        url = match.group(0)
        kite = KiteConnect(api_key=API_KEY, root=url, timeout=TIMEOUT)
        response = requests.get(
            f"{url}/connect/login",
            params={"v": "3", "api_key": API_KEY},
            allow_redirects=False,
            timeout=TIMEOUT,
        )
        request_token = dict(parse_qsl(urlsplit(response.headers["Location"]).query))["request_token"]
        assert kite.generate_session(request_token, api_secret=API_SECRET)["user_id"] == "ZX9876"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0
    assert "stopped" in stdout
    output = first_line + stdout + stderr
    assert API_SECRET not in output
    assert request_token not in output
    assert "POST /session/token 200" in stderr


def test_stop_is_prompt_even_while_a_response_is_delayed() -> None:
    sim = _simulator().start()
    sim.set_delay(30)
    url = sim.url
    started = time.perf_counter()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{url}/user/profile", headers=KITE_HEADERS, timeout=(TIMEOUT, 0.1))
    sim.stop()
    assert time.perf_counter() - started < 2
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/__sim/state", timeout=TIMEOUT)


def test_state_is_valid_json_with_the_public_settings(sim: KiteSimulator) -> None:
    state = json.loads(requests.get(f"{sim.url}/__sim/state", timeout=TIMEOUT).text)["data"]
    assert state["api_key"] == API_KEY
    assert state["redirect_url"] == REDIRECT_URL
    assert state["user_id"] == "AB1234"
    assert state["controls"] == {
        "delay_seconds": 0.0,
        "html_errors": False,
        "login_status": "success",
        "approved_platform": True,  # as this file's fixture makes it
    }


# -- approved platform and killed tokens ---------------------------------------------------------


def test_refresh_tokens_follow_the_approved_platform_switch(sim: KiteSimulator, kite: KiteConnect) -> None:
    assert _session(sim, kite)["refresh_token"]
    answer = requests.post(f"{sim.url}/__sim/control", json={"approved_platform": False}, timeout=TIMEOUT)
    assert answer.json()["data"]["approved_platform"] is False
    assert sim.approved_platform is False
    assert _session(sim, kite)["refresh_token"] == ""
    sim.set_approved_platform(True)
    assert _session(sim, kite)["refresh_token"]


def test_the_cli_issues_refresh_tokens_only_with_approved_platform() -> None:
    from local.kite_simulator import _parse_args

    assert _parse_args([]).approved_platform is False
    assert _parse_args(["--approved-platform"]).approved_platform is True


def test_a_killed_access_token_gets_token_exception_403_and_others_live_on(
    sim: KiteSimulator, kite: KiteConnect
) -> None:
    first = _session(sim, kite)
    second = _session(sim, kite)
    assert sim.kill_access_tokens(first["access_token"]) == 1
    dead = KiteConnect(api_key=API_KEY, root=sim.url, timeout=TIMEOUT)
    dead.set_access_token(first["access_token"])
    with pytest.raises(TokenException) as excinfo:
        dead.profile()
    assert excinfo.value.code == 403
    kite.set_access_token(second["access_token"])
    assert kite.profile()["user_id"] == "AB1234"
    # A login elsewhere ends the access token only: the refresh token can still renew.
    renewed = kite.renew_access_token(first["refresh_token"], API_SECRET)
    assert renewed["access_token"] in sim.active_access_tokens()
    assert sim.kill_access_tokens(first["access_token"]) == 0  # already dead


def test_kill_over_http_one_token_or_every_live_one(sim: KiteSimulator, kite: KiteConnect) -> None:
    first = _session(sim, kite)
    second = _session(sim, kite)
    one = requests.post(
        f"{sim.url}/__sim/kill", json={"access_token": first["access_token"]}, timeout=TIMEOUT
    )
    assert one.json() == {"status": "success", "data": {"killed": 1}}
    assert sim.active_access_tokens() == [second["access_token"]]
    every = requests.post(f"{sim.url}/__sim/kill", json={}, timeout=TIMEOUT)
    assert every.json()["data"] == {"killed": 1}
    assert sim.active_access_tokens() == []
    for bad in ([1], {"access_token": 5}, {"access_token": ""}):
        refused = requests.post(f"{sim.url}/__sim/kill", json=bad, timeout=TIMEOUT)
        assert refused.status_code == 400
        assert refused.json()["error_type"] == "InputException"


def test_official_client_logs_out_both_tokens(sim: KiteSimulator, kite: KiteConnect) -> None:
    session = _session(sim, kite)
    assert kite.invalidate_refresh_token(session["refresh_token"]) is True
    assert kite.invalidate_access_token() is True
    assert (sim.active_access_tokens(), sim.active_refresh_tokens()) == ([], [])
    deletes = [(r.method, r.path, sorted(r.query)) for r in sim.api_requests()[-2:]]
    assert deletes == [
        ("DELETE", "/session/token", ["api_key", "refresh_token"]),
        ("DELETE", "/session/token", ["access_token", "api_key"]),
    ]
