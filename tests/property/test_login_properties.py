"""GET /login under generated requests: it only ever sends the browser to Kite with a state that
/callback will accept, or refuses with a page that says why; it stores nothing anywhere.

Invariants, per request:
- never a 5xx (no fault is injected here) and never an exception; a 4xx is an HTML page with a
  message and sets no login cookie;
- a redirect goes to Kite's login page with this app's api_key, sets one login cookie, and
  carries a state that /callback's check accepts with that cookie: signed, unexpired, within its
  length limit, bound to the cookie's nonce, and carrying the requested ``next`` (as the same
  bytes once percent-decoded) only if that is a path on this site;
- nothing is written to any queue, bucket, table or secret;
- the api_secret reaches neither the answer nor the logs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import parse_qs, quote, unquote_to_bytes, urlsplit

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from kitehooks.login.state import StateRejected, verify_state
from local.provision import ResourceValues
from tests.conftest import TEST_API_KEY, TEST_API_SECRET, FakeLambdaContext, load_function, reset_layer_caches
from tests.property.conftest import (
    BrowserRequest,
    EmulatorStores,
    OutputCapture,
    any_text,
    assert_no_secret,
    check_page_answer,
    cookie_parts,
    cookies_set,
    extra_headers,
    is_same_site_path,
    methods,
    next_values,
    printable_ascii,
    property_settings,
    query_string,
)

KITE_LOGIN_URL = "https://kite.zerodha.com/connect/login"


# Built once: Hypothesis validates a strategy each time one is built.
other_parameters = st.lists(
    st.tuples(
        st.sampled_from(["next", "state", "redirect_params", "v", "api_key"]) | any_text,
        next_values | any_text,
    ),
    max_size=2,
)


@st.composite
def login_requests(draw: st.DrawFn) -> BrowserRequest:
    """Mostly a ``next`` of any kind, with other parameters (repeated ones API Gateway joins with ",")."""
    parameters = [("next", draw(next_values))] if draw(st.integers(0, 3)) else []
    parameters = draw(st.permutations(parameters + draw(other_parameters)))
    encoded = draw(st.integers(0, 3)) > 0
    if not encoded:  # sent as typed: only what fits a request line
        parameters = [(name, draw(printable_ascii)) for name, _ in parameters]
    return BrowserRequest(
        query=query_string(parameters, encoded),
        cookies=tuple(draw(cookie_parts)),
        headers=tuple(draw(extra_headers)),
        scheme=draw(st.sampled_from(["https", "https", "http"])),
    )


class LoginEndpoint:
    def __init__(self, stores: EmulatorStores) -> None:
        self._app = load_function("login")
        self._output = OutputCapture()  # after the function made its logger
        self._stores = stores
        self._requests = 0

    def get(self, request: BrowserRequest) -> tuple[dict[str, Any], dict[str, Any]]:
        """The answer and the event it answered; nothing stored, nothing secret shown."""
        self._requests += 1
        api_event = request.event("/login", f"login-{self._requests}")
        self._stores.changes()
        response, logged = self._output.call(partial(self._app.handler, api_event, FakeLambdaContext()))
        changes = self._stores.changes()
        assert changes.nothing, f"/login stored {changes}"
        assert_no_secret(logged + repr(response))
        return response, api_event


@pytest.fixture(scope="module")
def endpoint(
    module_stack: ResourceValues, module_env: pytest.MonkeyPatch, stores: EmulatorStores
) -> Iterator[LoginEndpoint]:
    module_env.setenv("API_CREDENTIALS_SECRET_ID", module_stack["ApiCredentialsSecret"]["Ref"])
    module_env.setenv("KITE_LOGIN_URL", KITE_LOGIN_URL)
    module_env.setenv("LOGIN_STATE_TTL_SECONDS", "600")
    reset_layer_caches()
    yield LoginEndpoint(stores)
    reset_layer_caches()


def check_redirect_to_kite(response: dict[str, Any], requested_next: str | None) -> None:
    location = urlsplit(response["headers"]["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == KITE_LOGIN_URL
    kite_query = parse_qs(location.query)
    assert kite_query["v"] == ["3"]
    assert kite_query["api_key"] == [TEST_API_KEY]
    [state] = parse_qs(kite_query["redirect_params"][0])["state"]
    [(cookie_name, nonce)] = cookies_set(response).items()
    assert cookie_name.endswith("kitehooks_login"), cookie_name
    try:
        checked = verify_state(TEST_API_SECRET, state, nonce, time.time())
    except StateRejected as rejection:
        raise AssertionError(f"/login issued a state /callback refuses: {rejection}") from None
    if checked.next_path is None:
        assert not requested_next, "the requested next was dropped"
        return
    assert requested_next, "a next nobody asked for"
    assert is_same_site_path(checked.next_path), checked.next_path
    # Percent-encoding is the browser's spelling of the same path; the bytes must be the same.
    assert unquote_to_bytes(checked.next_path) == unquote_to_bytes(
        quote(requested_next, safe="".join(chr(c) for c in range(0x21, 0x7F)), errors="surrogatepass")
    )


@property_settings(2000)
@given(request=login_requests())
# A next of 300 "é" fits 512 characters but made a state /callback refuses (issue 7, fixed).
@example(request=BrowserRequest(query="next=" + quote("/" + "é" * 300)))
@example(request=BrowserRequest(query="next=%2F%2Fevil.example"))
def test_login_redirects_only_with_a_state_the_callback_accepts_and_stores_nothing(
    endpoint: LoginEndpoint, request: BrowserRequest
) -> None:
    response, api_event = endpoint.get(request)
    status = check_page_answer(response)
    event(f"answered {status}")
    if status == 302:
        requested_next = (api_event.get("queryStringParameters") or {}).get("next")
        check_redirect_to_kite(response, requested_next)
    else:
        assert 400 <= status < 500, status
        assert cookies_set(response) == {}, "a refused login still set a cookie"


@property_settings(50)
@given(request=login_requests(), method=methods.filter(lambda method: method.upper() != "GET"))
# Found by this property: any method but GET is answered 500 "Something went wrong" and logged
# as an unexpected error (the Event Handler's "no route" error reaches the catch-all page).
@example(request=BrowserRequest(), method="POST")
def test_a_method_the_route_does_not_serve_is_a_4xx(
    endpoint: LoginEndpoint, request: BrowserRequest, method: str
) -> None:
    # API Gateway routes only GET /login here; a misrouted API or a $default route would not.
    response, _ = endpoint.get(replace(request, method=method))
    status = check_page_answer(response, routed=False)
    assert 400 <= status < 500, status
    assert cookies_set(response) == {}
