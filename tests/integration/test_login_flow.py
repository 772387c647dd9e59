"""/login and /callback against the Kite simulator and a moto server, both over HTTP."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from kiteconnect import KiteConnect

from kitehooks.login.start import completed_cookie_name, state_cookie_name
from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues
from local.samples import http_api_event
from tests.conftest import (
    TEST_API_KEY,
    TEST_API_SECRET,
    FakeLambdaContext,
    callback_settings,
    closed_port,
    load_function,
    reset_layer_caches,
)

REDIRECT_URL = "https://kitehooks.example/callback"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: str

    @property
    def location(self) -> str:
        return self.headers["Location"]


@dataclass
class Browser:
    """Drives the two functions the way API Gateway and a browser would, keeping cookies."""

    sim: KiteSimulator
    prefix: str
    jar: dict[str, str] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    https: bool = True  # as deployed; False: the local stack's plain http://127.0.0.1

    @property
    def login_cookie(self) -> str:
        return state_cookie_name(self.https)

    @property
    def completed_cookie(self) -> str:
        return completed_cookie_name(self.https)

    def call(
        self,
        function: str,
        path: str,
        query: str = "",
        host: str = "kitehooks.example",
        stage: str = "$default",
    ) -> Answer:
        cookies = [f"{name}={value}" for name, value in self.jar.items()]
        raw_path = path if stage == "$default" else f"/{stage}{path}"
        event = http_api_event(
            "GET",
            raw_path,
            None,
            query=query,
            cookies=cookies,
            request_id=uuid.uuid4().hex,
        )
        event["headers"]["host"] = host
        event["routeKey"] = event["requestContext"]["routeKey"] = f"GET {path}"
        event["requestContext"]["stage"] = stage
        if not self.https:
            event["headers"]["x-forwarded-proto"] = "http"  # as the local gateway says it
        response = load_function(function).handler(event, FakeLambdaContext())
        answer = Answer(
            response["statusCode"], response.get("headers", {}), response.get("cookies", []), response["body"]
        )
        for cookie in answer.cookies:
            name, _, rest = cookie.partition("=")
            value = rest.split(";")[0]
            if "Max-Age=0" in cookie:
                self.jar.pop(name, None)
            else:
                self.jar[name] = value
        self.answers.append(answer)
        return answer

    def login(self, query: str = "") -> Answer:
        return self.call("login", "/login", query)

    def kite(self, login_location: str) -> str:
        """Follow /login's redirect to Kite; return the callback query Kite redirects back with."""
        response = requests.get(login_location, allow_redirects=False, timeout=5)
        assert response.status_code == 302
        location = response.headers["Location"]
        assert location.startswith(REDIRECT_URL)
        return urlsplit(location).query

    def callback(self, query: str) -> Answer:
        return self.call("callback", "/callback", query)

    def full_login(self) -> Answer:
        return self.callback(self.kite(self.login().location))


@pytest.fixture
def browser(stack: ResourceValues, sim: KiteSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    prefix = f"kitehooks-test-{uuid.uuid4().hex[:8]}/sessions"
    for name, value in callback_settings(stack, sim.url, prefix, kite_read_timeout="1").items():
        monkeypatch.setenv(name, value)
    reset_layer_caches()
    yield Browser(sim, prefix)
    reset_layer_caches()


def stored_session(browser: Browser, user_id: str = "AB1234") -> dict[str, Any] | None:
    secrets = boto3.client("secretsmanager")
    try:
        value = secrets.get_secret_value(SecretId=f"{browser.prefix}/{user_id}")["SecretString"]
    except secrets.exceptions.ResourceNotFoundException:
        return None
    session: dict[str, Any] = json.loads(value)
    return session


def exchanges(sim: KiteSimulator) -> int:
    return sum(
        1 for request in sim.api_requests() if request.path == "/session/token" and request.method == "POST"
    )


def test_login_redirects_to_kite_with_a_signed_state_and_a_browser_cookie(browser: Browser) -> None:
    answer = browser.login()
    assert answer.status == 302
    target = urlsplit(answer.location)
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{browser.sim.url}/connect/login"
    query = parse_qs(target.query)
    assert query["v"] == ["3"]
    assert query["api_key"] == [TEST_API_KEY]
    assert "state" in parse_qs(query["redirect_params"][0])
    [cookie] = answer.cookies
    # Over HTTPS the __Host- prefix: only this origin, over HTTPS, can set the login cookie.
    assert cookie.startswith("__Host-kitehooks_login=")
    for attribute in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=600"):
        assert attribute in cookie
    assert "Domain" not in cookie


def test_over_plain_http_the_login_cookie_is_unprefixed_and_the_login_completes(browser: Browser) -> None:
    # The local stack: a browser drops Secure and __Host- cookies that arrive over plain HTTP.
    browser.https = False
    login = browser.login()
    [cookie] = login.cookies
    assert cookie.startswith("kitehooks_login=")
    assert "Secure" not in cookie
    answer = browser.callback(browser.kite(login.location))
    assert answer.status == 200, answer.body
    # The login cookie cleared under the name it was set with; the completed marker is plain too.
    assert list(browser.jar) == ["kitehooks_done"]
    [marker] = [cookie for cookie in answer.cookies if cookie.startswith("kitehooks_done=")]
    assert "Secure" not in marker
    assert stored_session(browser) is not None


def test_a_login_cookie_under_the_other_name_is_not_the_login_cookie(browser: Browser) -> None:
    login = browser.login()
    query = browser.kite(login.location)
    nonce = browser.jar.pop(browser.login_cookie)
    browser.jar[state_cookie_name(not browser.https)] = nonce  # e.g. planted over plain HTTP
    answer = browser.callback(query)
    assert answer.status == 400
    assert "did not start the login" in answer.body
    assert exchanges(browser.sim) == 0


def test_full_login_stores_the_session_and_shows_no_token(browser: Browser) -> None:
    answer = browser.full_login()
    assert answer.status == 200, answer.body
    assert "Welcome, Arjun Bhat" in answer.body
    assert "06:00 IST" in answer.body
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert "You can close this tab." in answer.body
    assert list(browser.jar) == [browser.completed_cookie]  # the login cookie was cleared

    session = stored_session(browser)
    assert session is not None
    assert set(session) >= {
        "user_id",
        "user_name",
        "api_key",
        "access_token",
        "public_token",
        "refresh_token",
        "login_time",
        "expires_at",
        "status",
        "updated_at",
    }
    assert (session["user_id"], session["api_key"], session["status"]) == ("AB1234", TEST_API_KEY, "active")
    assert session["access_token"] in browser.sim.active_access_tokens()
    expires = datetime.fromisoformat(session["expires_at"])
    assert expires.utcoffset() == timedelta(hours=5, minutes=30)
    assert (expires.hour, expires.minute) == (6, 0)
    assert timedelta(0) < expires - datetime.fromisoformat(session["login_time"]) <= timedelta(days=1)
    for token in (session["access_token"], session["public_token"], session["refresh_token"]):
        assert token not in answer.body

    # The official client accepts the stored token: it is a live Kite session.
    kite = KiteConnect(api_key=TEST_API_KEY, root=browser.sim.url)
    kite.set_access_token(session["access_token"])
    assert kite.profile()["user_id"] == "AB1234"


def test_second_login_stores_a_new_version_of_the_same_secret(browser: Browser) -> None:
    assert browser.full_login().status == 200
    first = stored_session(browser)
    assert browser.full_login().status == 200
    second = stored_session(browser)
    assert first is not None
    assert second is not None
    assert first["access_token"] != second["access_token"]
    versions = boto3.client("secretsmanager").list_secret_version_ids(SecretId=f"{browser.prefix}/AB1234")
    assert len(versions["Versions"]) == 2


def test_next_path_is_where_the_browser_goes_after_login(browser: Browser) -> None:
    answer = browser.callback(browser.kite(browser.login("next=%2Forders%3Fview%3Dopen").location))
    assert answer.status == 303
    assert answer.location == "/orders?view=open"
    assert stored_session(browser) is not None


@pytest.mark.parametrize(
    ("next_query", "location"),
    [
        ("next=%2Forders%2F%C3%BC", "/orders/%C3%BC"),
        ("next=%2F%E4%B8%AD%3Ftab%3D%F0%9F%98%80", "/%E4%B8%AD?tab=%F0%9F%98%80"),
        ("next=%2F" + "%C3%BC" * 85, "/" + "%C3%BC" * 85),  # 511 characters once encoded
    ],
)
def test_non_ascii_next_comes_back_url_encoded_after_login(
    browser: Browser, next_query: str, location: str
) -> None:
    # Location is a header: ASCII only, as the browser sent the path in the first place.
    answer = browser.callback(browser.kite(browser.login(next_query).location))
    assert answer.status == 303, answer.body
    assert answer.location == location


@pytest.mark.parametrize("next_query", ["next=%2F" + "%C3%BC" * 300, "next=%2F" + "%F0%9F%98%80" * 43])
def test_next_too_long_once_encoded_is_refused_at_login_before_kite(
    browser: Browser, next_query: str
) -> None:
    # Before: /login redirected to Kite, and /callback refused the state after the user logged in.
    answer = browser.login(next_query)
    assert answer.status == 400
    assert "Next is too long" in answer.body
    assert answer.cookies == []
    assert "Location" not in answer.headers


@pytest.mark.parametrize(
    "next_path", ["https://evil.example/", "//evil.example", "/\\evil.example", "orders"]
)
def test_next_must_be_a_path_on_this_site(browser: Browser, next_path: str) -> None:
    from urllib.parse import quote

    answer = browser.login(f"next={quote(next_path, safe='')}")
    assert answer.status == 400
    assert "path on this site" in answer.body
    assert answer.cookies == []


def test_denied_login_stores_nothing_and_never_calls_kite(browser: Browser) -> None:
    browser.sim.set_login_outcome("cancelled")
    answer = browser.full_login()
    assert answer.status == 400
    assert "cancelled" in answer.body
    assert exchanges(browser.sim) == 0
    assert stored_session(browser) is None


def test_reloading_the_greeting_says_the_login_was_completed_without_a_second_exchange(
    browser: Browser,
) -> None:
    query = browser.kite(browser.login().location)
    first = browser.callback(query)
    assert first.status == 200, first.body
    session = stored_session(browser)
    assert session is not None
    for _ in range(2):  # reload, then Back and reload again
        again = browser.callback(query)
        assert again.status == 200, again.body
        assert "You are logged in to Kite as AB1234" in again.body
        assert "already completed" in again.body
        assert "You can close this tab." in again.body
        assert "could not" not in again.body
        for token in (session["access_token"], session["public_token"]):
            assert token not in again.body
    assert exchanges(browser.sim) == 1
    versions = boto3.client("secretsmanager").list_secret_version_ids(SecretId=f"{browser.prefix}/AB1234")
    assert len(versions["Versions"]) == 1


def test_a_reload_after_the_state_expired_still_says_completed(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGIN_STATE_TTL_SECONDS", "2")  # at least a second to complete it
    reset_layer_caches()
    query = browser.kite(browser.login().location)
    assert browser.callback(query).status == 200
    time.sleep(2.1)
    assert "already completed" in browser.callback(query).body
    browser.jar.clear()  # another browser: only the expiry is left to say
    answer = browser.callback(query)
    assert answer.status == 400
    assert "expired" in answer.body
    assert "If you completed it earlier, that login stands" in answer.body
    assert exchanges(browser.sim) == 1


def test_replayed_callback_is_refused_before_kite_is_called(browser: Browser) -> None:
    # Another browser (no completed marker) replaying the redirect, even with the login cookie.
    login = browser.login()
    saved_cookie = dict(browser.jar)
    query = browser.kite(login.location)
    assert browser.callback(query).status == 200
    browser.jar.clear()
    browser.jar.update(saved_cookie)
    answer = browser.callback(query)
    assert answer.status == 400
    assert "already used" in answer.body
    assert exchanges(browser.sim) == 1


def test_a_completed_marker_for_another_login_or_forged_says_nothing_completed(browser: Browser) -> None:
    assert browser.full_login().status == 200
    other_marker = browser.jar[browser.completed_cookie]  # genuine, but for the first login's nonce
    login = browser.login()
    saved_cookie = dict(browser.jar)
    browser.sim.set_login_outcome("cancelled")  # the second login's state gets used up, unfinished
    query = browser.kite(login.location)
    assert browser.callback(query).status == 400
    user, until, mac = other_marker.split("~")
    for planted in (other_marker, f"{user}~{until}~{'A' * 22}", f"ZZ9999~{until}~{mac}"):
        browser.jar.clear()
        browser.jar.update(saved_cookie)
        browser.jar[browser.completed_cookie] = planted
        answer = browser.callback(query)
        assert answer.status == 400, planted
        assert "already used" in answer.body
    assert exchanges(browser.sim) == 1


def test_reused_request_token_is_refused_by_kite_and_shown_as_expired(browser: Browser) -> None:
    used = parse_qs(browser.kite(browser.login().location))
    assert (
        browser.callback(
            f"status=success&request_token={used['request_token'][0]}&state={used['state'][0]}"
        ).status
        == 200
    )
    fresh = parse_qs(browser.kite(browser.login().location))
    answer = browser.callback(
        f"status=success&request_token={used['request_token'][0]}&state={fresh['state'][0]}"
    )
    assert answer.status == 400
    assert "expired or was already used" in answer.body
    assert exchanges(browser.sim) == 2


def test_forged_state_is_refused(browser: Browser) -> None:
    query = parse_qs(browser.kite(browser.login().location))
    state = query["state"][0]
    forged = state[:-2] + ("AA" if not state.endswith("AA") else "BB")
    answer = browser.callback(f"status=success&request_token={query['request_token'][0]}&state={forged}")
    assert answer.status == 400
    assert "not one we issued" in answer.body
    assert exchanges(browser.sim) == 0


def test_state_signed_with_another_secret_is_refused(browser: Browser) -> None:
    from kitehooks.login.state import sign_state

    query = parse_qs(browser.kite(browser.login().location))
    nonce = browser.jar[browser.login_cookie]
    forged = sign_state("guessed-secret", nonce, int(time.time()) + 600, None)
    answer = browser.callback(f"status=success&request_token={query['request_token'][0]}&state={forged}")
    assert answer.status == 400
    assert exchanges(browser.sim) == 0


def test_expired_state_is_refused(browser: Browser, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGIN_STATE_TTL_SECONDS", "1")
    reset_layer_caches()
    query = browser.kite(browser.login().location)
    time.sleep(1.2)
    answer = browser.callback(query)
    assert answer.status == 400
    assert "expired" in answer.body
    assert exchanges(browser.sim) == 0


def test_missing_cookie_is_refused(browser: Browser) -> None:
    query = browser.kite(browser.login().location)
    browser.jar.clear()
    answer = browser.callback(query)
    assert answer.status == 400
    assert "did not start the login" in answer.body
    assert exchanges(browser.sim) == 0


def test_cookie_of_another_login_is_refused(browser: Browser) -> None:
    query = browser.kite(browser.login().location)
    browser.jar.clear()
    browser.login()  # another browser's cookie: its own login only
    answer = browser.callback(query)
    assert answer.status == 400
    assert "another browser" in answer.body
    assert exchanges(browser.sim) == 0


@pytest.mark.parametrize("order", ["older first", "newer first"])
def test_two_logins_in_two_tabs_both_complete(browser: Browser, order: str) -> None:
    # Before: the newer /login replaced the cookie, and the older tab's login was refused.
    older = browser.kite(browser.login().location)
    newer = browser.kite(browser.login().location)
    assert len(browser.jar[browser.login_cookie].split(".")) == 2
    first, second = (older, newer) if order == "older first" else (newer, older)
    answer = browser.callback(first)
    assert answer.status == 200, answer.body
    assert browser.login_cookie in browser.jar  # only the used nonce left it
    answer = browser.callback(second)
    assert answer.status == 200, answer.body
    assert browser.login_cookie not in browser.jar
    assert exchanges(browser.sim) == 2
    # Both tabs' greetings survive a reload.
    for query in (older, newer):
        assert "already completed" in browser.callback(query).body
    assert exchanges(browser.sim) == 2


def test_a_refused_redirect_in_one_tab_leaves_the_other_tabs_login(browser: Browser) -> None:
    pending = browser.kite(browser.login().location)
    assert browser.callback("status=success&request_token=abcdefgh&state=junk.junk").status == 400
    assert browser.callback("").status == 400
    assert browser.callback(pending).status == 200


@pytest.mark.parametrize(
    ("query", "reason"),
    [("", "missing"), ("status=success&request_token=short", "malformed"), ("status=success", "missing")],
)
def test_missing_or_malformed_parameters_are_400(browser: Browser, query: str, reason: str) -> None:
    state = parse_qs(browser.kite(browser.login().location))["state"][0]
    answer = browser.callback(f"{query}&state={state}" if query else "")
    assert answer.status == 400
    assert reason in answer.body
    assert exchanges(browser.sim) == 0


def test_user_not_on_the_allow_list_gets_403_nothing_stored_and_the_token_revoked(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_USER_IDS", "ZZ9999, YY8888")
    reset_layer_caches()
    answer = browser.full_login()
    assert answer.status == 403
    assert "AB1234" in answer.body
    assert stored_session(browser) is None
    assert browser.sim.active_access_tokens() == []


def test_user_on_the_allow_list_logs_in(browser: Browser, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_USER_IDS", "zz9999,ab1234")
    reset_layer_caches()
    assert browser.full_login().status == 200


def test_kite_down_is_502(browser: Browser, monkeypatch: pytest.MonkeyPatch) -> None:
    query = browser.kite(browser.login().location)
    monkeypatch.setenv("KITE_API_ROOT", f"http://127.0.0.1:{closed_port()}")
    reset_layer_caches()
    answer = browser.callback(query)
    assert answer.status == 502
    assert stored_session(browser) is None


def test_kite_slow_is_504_without_a_retry(browser: Browser) -> None:
    query = browser.kite(browser.login().location)
    browser.sim.set_delay(2.5)
    answer = browser.callback(query)
    assert answer.status == 504
    assert exchanges(browser.sim) == 1  # a request_token works once: never sent twice
    assert stored_session(browser) is None


def test_kite_answering_html_is_502(browser: Browser) -> None:
    query = browser.kite(browser.login().location)
    browser.sim.set_html_errors(True)
    answer = browser.callback(query)
    assert answer.status == 502
    assert "<center>" not in answer.body  # Kite's page is not passed through
    assert stored_session(browser) is None


def test_placeholder_credentials_make_login_refuse_clearly(browser: Browser, stack: ResourceValues) -> None:
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack["ApiCredentialsSecret"]["Ref"],
        SecretString='{"api_key": "REPLACE_ME", "api_secret": "REPLACE_ME"}',
    )
    answer = browser.login()
    assert answer.status == 503
    assert "not configured" in answer.body


def test_no_secret_or_token_reaches_logs_or_responses(
    browser: Browser,
    monkeypatch: pytest.MonkeyPatch,
    service_logs: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Every path at once: success, replay, reuse, denial, Kite slow, HTML and down, allow-list.
    first = browser.kite(browser.login().location)
    browser.callback(first)
    browser.callback(first)
    browser.full_login()
    browser.sim.set_login_outcome("cancelled")
    browser.full_login()
    browser.sim.set_login_outcome("success")
    query = browser.kite(browser.login().location)
    browser.sim.set_delay(1.5)
    browser.callback(query)
    browser.sim.set_delay(0)
    browser.sim.set_html_errors(True)
    browser.full_login()
    browser.sim.set_html_errors(False)
    monkeypatch.setenv("ALLOWED_USER_IDS", "ZZ9999")
    reset_layer_caches()
    browser.full_login()
    monkeypatch.setenv("KITE_API_ROOT", f"http://127.0.0.1:{closed_port()}")
    reset_layer_caches()
    browser.full_login()

    session = stored_session(browser)
    assert session is not None
    captured = capsys.readouterr()
    output = service_logs.getvalue() + captured.out + captured.err
    output += json.dumps([answer.__dict__ for answer in browser.answers])
    assert "session stored" in output  # the capture did see the logs
    planted = [TEST_API_SECRET, session["access_token"], session["refresh_token"], session["public_token"]]
    planted += browser.sim.issued_request_tokens() + browser.sim.active_refresh_tokens()
    for value in planted:
        assert value
        assert value not in output


def test_an_unexpected_error_is_a_plain_500_page(browser: Browser, monkeypatch: pytest.MonkeyPatch) -> None:
    from kitehooks.sessions.store import SessionStore

    def broken(self: SessionStore, session: object) -> str:
        raise RuntimeError("bug while storing")

    monkeypatch.setattr(SessionStore, "put", broken)
    answer = browser.full_login()
    assert answer.status == 500
    assert "Something went wrong" in answer.body
    assert "Traceback" not in answer.body
    assert "bug while storing" not in answer.body


def test_a_named_stage_in_the_path_is_served_like_the_deployed_api(browser: Browser) -> None:
    # Deployed, the stage is part of the path: https://<api>.execute-api.../prod/login
    event = http_api_event("GET", "/prod/login", None, request_id="staged")
    event["routeKey"] = event["requestContext"]["routeKey"] = "GET /login"
    event["requestContext"]["stage"] = "prod"
    response = load_function("login").handler(event, FakeLambdaContext())
    assert response["statusCode"] == 302
    assert response["headers"]["Location"].startswith(f"{browser.sim.url}/connect/login?")


def test_the_landing_page_says_what_this_is_and_links_to_login(browser: Browser) -> None:
    answer = browser.call("login", "/")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    assert '<a class="button" href="/login">Log in with Kite</a>' in answer.body
    assert '<a href="/login">/login</a>' in answer.body
    assert answer.cookies == []
    assert "AB1234" not in answer.body
    # Self-contained: the policy loads nothing, and the one inline style is allowed by its hash.
    policy = answer.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; style-src 'sha256-")
    assert "unsafe-inline" not in policy
    assert "http" not in answer.body.split("</style>")[0]


def test_links_keep_the_stage_of_the_deployed_url(browser: Browser) -> None:
    # https://<api>.execute-api.../prod/ : a link to "/login" would leave the stage.
    for path in ("/", ""):  # the ApiUrl output ends without a slash: rawPath "/prod"
        landing = browser.call("login", path, stage="prod")
        assert landing.status == 200, path
        assert 'href="/prod/login"' in landing.body
    refused = browser.call("callback", "/callback", "status=success", stage="prod")
    assert refused.status == 400
    assert '<a href="/prod/login">/login</a>' in refused.body


def test_next_is_a_path_of_the_api_under_its_stage(browser: Browser) -> None:
    login = browser.call("login", "/login", "next=%2F", stage="prod")
    answer = browser.call("callback", "/callback", browser.kite(login.location), stage="prod")
    assert answer.status == 303, answer.body
    assert answer.location == "/prod/"  # the landing page, as deployed


REGISTERED = "http://127.0.0.1:3000/callback"


@pytest.mark.parametrize("query", ["", "next=%2F"])
def test_login_on_another_host_goes_first_to_the_registered_host(
    browser: Browser, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    # Kite (and the simulator) redirect to the one registered URL: a cookie set on localhost
    # would not be sent to 127.0.0.1, and the login would fail after the user logged in at Kite.
    monkeypatch.setenv("REDIRECT_URL", REGISTERED)
    browser.https = False
    answer = browser.call("login", "/login", query, host="localhost:3000")
    assert answer.status == 303
    assert answer.location == "http://127.0.0.1:3000/login" + (f"?{query}" if query else "")
    assert answer.cookies == []
    assert browser.call("login", "/login", query, host="127.0.0.1:3000").status == 302
    assert browser.call("login", "/login", query, host="127.0.0.1:3001").status == 303


def test_the_registered_host_check_follows_the_stage_and_default_ports(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIRECT_URL", "https://login.example.com/prod/callback")
    assert browser.call("login", "/login", host="LOGIN.example.com:443", stage="prod").status == 302
    moved = browser.call("login", "/login", "next=%2F", host="abc123.execute-api.example", stage="prod")
    assert moved.status == 303
    assert moved.location == "https://login.example.com/prod/login?next=%2F"


def test_without_a_registered_redirect_url_any_host_starts_the_login(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIRECT_URL", raising=False)
    assert browser.call("login", "/login", host="localhost:3000").status == 302


def test_a_malformed_registered_redirect_url_is_a_setup_fault(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIRECT_URL", "127.0.0.1:3000/callback")
    answer = browser.call("login", "/login", host="localhost:3000")
    assert answer.status == 503
    assert "not configured" in answer.body


def test_a_session_write_whose_answer_was_lost_is_read_back_and_its_token_kept(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets Manager applied the write but its answer never came (a timeout, a 5xx): ending
    the Kite session now would leave the stored session holding a dead token."""
    from kitehooks.sessions import store as sessions

    real_put = sessions.SessionStore.put

    def put_then_lose_the_answer(store: sessions.SessionStore, session: sessions.KiteSession) -> str:
        real_put(store, session)
        raise sessions.SessionStoreError("Secrets Manager did not answer (ReadTimeoutError)")

    monkeypatch.setattr(sessions.SessionStore, "put", put_then_lose_the_answer)
    answer = browser.full_login()
    assert answer.status == 200, answer.body
    stored = stored_session(browser)
    assert stored is not None
    assert stored["access_token"] in browser.sim.active_access_tokens()


def test_a_session_write_that_did_not_happen_ends_the_kite_session(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kitehooks.sessions import store as sessions

    def refuse(store: sessions.SessionStore, session: sessions.KiteSession) -> str:
        raise sessions.SessionWriteRefused("Secrets Manager refused the write (AccessDeniedException)")

    monkeypatch.setattr(sessions.SessionStore, "put", refuse)
    answer = browser.full_login()
    assert answer.status == 503
    assert "could not be saved" in answer.body
    assert stored_session(browser) is None
    assert browser.sim.active_access_tokens() == []  # the token Kite issued was ended


def test_a_session_write_with_no_answer_and_nothing_stored_yet_leaves_the_token_alone(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer means the write may still land after we looked: ending the token then would
    leave the stored session holding a dead one. Only a refusal proves it never will."""
    from kitehooks.sessions import store as sessions

    def no_answer(store: sessions.SessionStore, session: sessions.KiteSession) -> str:
        raise sessions.SessionStoreError("Secrets Manager did not answer (ReadTimeoutError)")

    monkeypatch.setattr(sessions.SessionStore, "put", no_answer)
    answer = browser.full_login()
    assert answer.status == 503
    assert "could not be confirmed" in answer.body
    assert len(browser.sim.active_access_tokens()) == 1  # not ended
