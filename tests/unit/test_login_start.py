"""/login's half of the login: the cookie it sets in each mode, and the state it may issue."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kitehooks.config import LoginSettings
from kitehooks.credentials import ApiCredentials
from kitehooks.login import state as login_state
from kitehooks.login.start import (
    Page,
    begin_login,
    landing_page,
    on_registered_host,
    state_cookie,
    state_cookie_name,
)

SETTINGS = LoginSettings(
    kite_login_url="https://kite.zerodha.com/connect/login", state_ttl_seconds=600, redirect_url=None
)
CREDENTIALS = ApiCredentials(api_key="kitehooks_test_key", api_secret="login-start-secret")
NOW = 1_800_000_000.0
REDIRECT_URL = "https://kitehooks.example/prod/callback"


def attributes(cookie: str) -> tuple[str, str, set[str]]:
    """(name, value, attributes lower-cased) of a Set-Cookie value."""
    first, *rest = [part.strip() for part in cookie.split(";")]
    name, _, value = first.partition("=")
    found = set()
    for attribute in rest:
        key, sep, val = attribute.partition("=")
        found.add((key + sep + val).lower())
    return name, value, found


def test_the_cookie_name_is_host_prefixed_only_over_https() -> None:
    assert state_cookie_name(secure=True) == "__Host-kitehooks_login"
    assert state_cookie_name(secure=False) == "kitehooks_login"


def test_over_https_the_cookie_meets_the_host_prefix_rules() -> None:
    name, value, found = attributes(str(state_cookie("nonce-value", 600, secure=True)))
    assert (name, value) == ("__Host-kitehooks_login", "nonce-value")
    # A browser drops a __Host- cookie that lacks Secure or Path=/, or has a Domain.
    assert {"secure", "path=/", "httponly", "samesite=lax", "max-age=600"} <= found
    assert not any(attribute.startswith("domain") for attribute in found)


def test_over_plain_http_the_cookie_has_the_plain_name_and_no_secure_flag() -> None:
    # The local stack serves http://127.0.0.1: a browser would drop a Secure or __Host- cookie.
    name, _, found = attributes(str(state_cookie("nonce-value", 600, secure=False)))
    assert name == "kitehooks_login"
    assert "secure" not in found
    assert {"path=/", "httponly", "samesite=lax"} <= found


@pytest.mark.parametrize("secure", [True, False])
def test_the_cookie_the_callback_clears_is_the_one_login_set(secure: bool) -> None:
    page = begin_login(SETTINGS, CREDENTIALS, None, secure, NOW)
    set_name, _, _ = attributes(str(page.cookies[0]))
    cleared_name, cleared_value, found = attributes(str(state_cookie("", 0, secure)))
    assert (cleared_name, cleared_value) == (set_name, "")
    assert "max-age=0" in found


def kite_round_trip(page: Page) -> dict[str, str]:
    """What /callback receives: Kite decodes redirect_params from its login URL and appends it
    to the registered redirect URL's query, after its own parameters."""
    assert page.location is not None
    login_query = parse_qs(urlsplit(page.location).query, strict_parsing=True)
    (redirect_params,) = login_query["redirect_params"]
    callback_url = (
        f"{REDIRECT_URL}?"
        + urlencode({"action": "login", "type": "login", "status": "success", "request_token": "t" * 32})
        + "&"
        + redirect_params
    )
    return {key: values[-1] for key, values in parse_qs(urlsplit(callback_url).query).items()}


def test_a_next_too_long_once_encoded_is_refused_at_login_before_kite() -> None:
    # 300 characters pass a length check on characters; their state would be 2,530 long, which
    # /callback refuses only after the user has logged in at Kite.
    page = begin_login(SETTINGS, CREDENTIALS, "/" + "ü" * 300, True, NOW)
    assert page.status_code == 400
    assert "too long" in page.message
    assert page.location is None
    assert page.cookies == []


def test_a_non_ascii_next_that_fits_goes_through_kite_and_verifies() -> None:
    page = begin_login(SETTINGS, CREDENTIALS, "/orders/ü?tab=中", True, NOW)
    assert page.status_code == 302
    query = kite_round_trip(page)
    nonce = attributes(str(page.cookies[0]))[1]
    checked = login_state.verify_state(CREDENTIALS.api_secret, query["state"], nonce, NOW + 60)
    assert checked.next_path == "/orders/%C3%BC?tab=%E4%B8%AD"


def test_login_never_issues_a_state_longer_than_the_callback_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    # The last guard, on the signed state itself: with a lower limit it is what refuses.
    monkeypatch.setattr(login_state, "MAX_STATE_LENGTH", 150)
    page = begin_login(SETTINGS, CREDENTIALS, "/" + "a" * 100, True, NOW)
    assert page.status_code == 400
    assert "too long" in page.message
    assert page.cookies == []
    assert begin_login(SETTINGS, CREDENTIALS, "/a", True, NOW).status_code == 302


NEXT_VALUES = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.builds(
        lambda body: "/" + body,
        st.text(
            alphabet=st.one_of(
                st.characters(codec="utf-8"),
                st.sampled_from('"ü中😀%&=+#?'),
                st.characters(max_codepoint=0x7F),
            ),
            max_size=login_state.MAX_RETURN_PATH_LENGTH + 10,
        ),
    ),
)


@settings(max_examples=400, deadline=None)
@given(next_path=NEXT_VALUES, secure=st.booleans())
def test_any_next_is_refused_at_login_or_verifies_at_the_callback(
    next_path: str | None, secure: bool
) -> None:
    page = begin_login(SETTINGS, CREDENTIALS, next_path, secure, NOW)
    if page.status_code == 400:
        assert page.location is None
        assert page.cookies == []
        return
    assert page.status_code == 302
    query = kite_round_trip(page)
    name, nonce, _ = attributes(str(page.cookies[0]))
    assert name == state_cookie_name(secure)
    checked = login_state.verify_state(CREDENTIALS.api_secret, query["state"], nonce, NOW + 60)
    assert checked.next_path == login_state.check_return_path(next_path)
    assert checked.next_path is None or checked.next_path.isascii()


def test_a_second_login_keeps_the_first_tabs_nonce_in_the_cookie() -> None:
    # Before: the second /login replaced the cookie and the first tab's login was refused.
    first = begin_login(SETTINGS, CREDENTIALS, None, True, NOW)
    first_cookie = attributes(str(first.cookies[0]))[1]
    second = begin_login(SETTINGS, CREDENTIALS, None, True, NOW, login_cookie=first_cookie)
    second_cookie = attributes(str(second.cookies[0]))[1]
    for page in (first, second):
        state = kite_round_trip(page)["state"]
        assert login_state.verify_state(CREDENTIALS.api_secret, state, second_cookie, NOW + 60)


@pytest.mark.parametrize(
    ("registered", "host", "secure", "moved_to"),
    [
        ("http://127.0.0.1:3000/callback", "127.0.0.1:3000", False, None),
        ("http://127.0.0.1:3000/callback", "localhost:3000", False, "http://127.0.0.1:3000/login?next=%2F"),
        ("http://127.0.0.1:3000/callback", "127.0.0.1:3001", False, "http://127.0.0.1:3000/login?next=%2F"),
        ("http://localhost:3000/callback", "LOCALHOST:3000", False, None),
        ("https://api.example.com/prod/callback", "api.example.com", True, None),
        ("https://api.example.com:443/prod/callback", "api.example.com", True, None),
        (
            "https://api.example.com/callback",
            "x.execute-api.example",
            True,
            "https://api.example.com/login?next=%2F",
        ),
        (
            "https://api.example.com/kite/return",
            "other.example",
            True,
            "https://api.example.com/login?next=%2F",
        ),
        (None, "localhost:3000", False, None),  # not known: no check
        ("http://127.0.0.1:3000/callback", None, False, None),
        ("http://127.0.0.1:3000/callback", "[::1", False, "http://127.0.0.1:3000/login?next=%2F"),
    ],
)
def test_login_moves_to_the_host_kite_redirects_back_to(
    registered: str | None, host: str | None, secure: bool, moved_to: str | None
) -> None:
    page = on_registered_host(registered, host, secure, "/login", "next=%2F")
    if moved_to is None:
        assert page is None
        return
    assert page is not None
    assert (page.status_code, page.location, page.cookies) == (303, moved_to, [])


def test_the_landing_page_names_no_user_and_links_to_login() -> None:
    page = landing_page()
    assert (page.status_code, page.link, page.cookies) == (200, ("Log in with Kite", "/login"), [])
    assert "/login" in page.message


def test_the_registered_redirect_url_is_a_parameter_not_built_from_the_api() -> None:
    # The API's definition names LoginFunction (its integration): a variable built from
    # ${HttpApi} would make a circular dependency that only a deploy reports.
    import yaml

    from local.gateway import load_template

    template = load_template(Path(__file__).resolve().parents[2] / "template.yaml")
    variables = template["Resources"]["LoginFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["REDIRECT_URL"] == {
        "Fn::If": ["HasKiteRedirectUrl", {"Ref": "KiteRedirectUrl"}, {"Ref": "AWS::NoValue"}]
    }
    assert template["Parameters"]["KiteRedirectUrl"]["Default"] == ""
    assert "HttpApi" not in yaml.safe_dump(variables)
