"""GET /callback under generated requests, against the Kite simulator and the emulator over HTTP.

Invariants, per request:
- never a 5xx (no fault is injected here) and never an exception; a 4xx is an HTML page with a
  message, and sets no login cookie;
- without a request_token that Kite issued, the answer is a 4xx and no session is stored;
- a 4xx stores nothing, except the claim that uses up a login state: at most one item in the
  login-states table, only for a state signed with the app's api_secret, unexpired, and sent
  with its nonce in a cookie; keyed by the nonce's hash and expiring with the state; a replay
  of the same request stores nothing more;
- a login started at /login and completed at Kite is stored as one session, and its redirect
  (if any) stays on this site; replayed, it stores nothing more;
- neither the api_secret nor a token reaches the answer or the logs.
"""

from __future__ import annotations

import hashlib
import json
import string
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from urllib.parse import parse_qs, quote, unquote_to_bytes, urlsplit

import boto3
import pytest
import requests
from hypothesis import event, example, given
from hypothesis import strategies as st

from kitehooks.login.state import sign_state
from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues
from tests.conftest import (
    TEST_API_KEY,
    TEST_API_SECRET,
    FakeLambdaContext,
    callback_settings,
    load_function,
    reset_layer_caches,
)
from tests.property.conftest import (
    BrowserRequest,
    Changes,
    EmulatorStores,
    OutputCapture,
    StoredItem,
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
    same_site_paths,
)

REDIRECT_URL = "https://kitehooks.example/callback"
OTHER_SECRET = "kt-other-secret-0000"
LOGIN_COOKIES = ("__Host-kitehooks_login", "kitehooks_login")  # over HTTPS, over plain HTTP
CALLBACK_PARAMETERS = ("state", "status", "request_token")
NONCE_CHARACTERS = string.ascii_letters + string.digits + "_-"

# One instant for every example, so that a replayed example signs the very same state; states
# signed "now" stay valid for longer than the module runs.
STARTED = int(time.time())
nonces = st.text(NONCE_CHARACTERS, min_size=22, max_size=64) | any_text  # any: not only the cookie's shape


@dataclass(frozen=True)
class SignedState:
    """A state signed with the app's api_secret: what /login would have issued."""

    state: str
    nonce: str
    expires_at: int


@dataclass(frozen=True)
class CallbackRequest:
    browser: BrowserRequest
    signed: SignedState | None = None
    deliveries: int = 1


STATE_KINDS = ["absent", "junk", "dotted", "signed", "signed", "expired", "other", "tampered"]
# Built once: Hypothesis validates a strategy each time one is built.
live_nonces = st.text(NONCE_CHARACTERS, min_size=22, max_size=64)
next_paths = st.none() | same_site_paths
statuses = st.sampled_from(["success", "success", "cancelled"]) | any_text
request_tokens = st.text(string.ascii_letters + string.digits, min_size=8, max_size=64) | any_text
repeated_parameters = st.lists(
    st.tuples(st.sampled_from(CALLBACK_PARAMETERS) | any_text, any_text), max_size=2
)


@st.composite
def callback_requests(draw: st.DrawFn) -> CallbackRequest:
    """Kite's redirect back, forged, replayed, tampered with, or plain junk; one in three carries
    a state we signed and its nonce in the login cookie, as a browser back from Kite would."""
    now = STARTED
    coherent = draw(st.integers(0, 2)) == 0
    nonce = draw(live_nonces if coherent else nonces)
    next_path = draw(next_paths)
    kind = "signed" if coherent else draw(st.sampled_from(STATE_KINDS))
    signed: SignedState | None = None
    state: str | None = None
    match kind:
        case "junk":
            state = draw(any_text)
        case "dotted":
            state = f"{draw(printable_ascii)}.{draw(printable_ascii)}"
        case "signed" | "tampered":
            signed = signed_state(nonce, now + draw(st.integers(300, 600)), next_path)
            state = signed.state
            if kind == "tampered":
                at = draw(st.integers(0, len(state) - 1))
                state = state[:at] + ("A" if state[at] != "A" else "B") + state[at + 1 :]
                signed = None
        case "expired":
            signed = signed_state(nonce, now - draw(st.integers(0, 10**6)), next_path)
            state = signed.state
        case "other":
            state = sign_state(OTHER_SECRET, nonce, now + 600, next_path)

    parameters: list[tuple[str, str]] = [] if state is None else [("state", state)]
    if draw(st.integers(0, 5)):
        parameters.append(("status", draw(statuses)))
    if draw(st.integers(0, 5)):
        parameters.append(("request_token", draw(request_tokens)))
    if not coherent:  # more of the same names too: API Gateway joins repeated ones with ","
        parameters += draw(repeated_parameters)
    parameters = draw(st.permutations(parameters))
    encoded = coherent or draw(st.integers(0, 5)) > 0
    if not encoded:  # sent as typed: only what fits a request line
        parameters = [
            (name, value if value.isascii() and value.isprintable() else "x") for name, value in parameters
        ]

    if coherent:  # whichever name the callback reads for this scheme, the nonce is there
        login_cookies = [f"{name}={nonce}" for name in LOGIN_COOKIES]
        others = [c for c in draw(cookie_parts) if c.partition("=")[0].strip() not in LOGIN_COOKIES]
    else:
        cookie_name = draw(st.sampled_from(LOGIN_COOKIES))
        login_cookies = [draw(st.sampled_from([f"{cookie_name}={nonce}", f"{cookie_name}=", cookie_name]))]
        others = draw(cookie_parts)
    browser = BrowserRequest(
        query=query_string(parameters, encoded),
        cookies=(*others, *login_cookies, *draw(cookie_parts)),
        headers=tuple(draw(extra_headers)),
        scheme=draw(st.sampled_from(["https", "https", "https", "http"])),
    )
    return CallbackRequest(browser, signed, draw(st.integers(1, 2)))


def signed_state(nonce: str, expires_at: int, next_path: str | None) -> SignedState:
    return SignedState(sign_state(TEST_API_SECRET, nonce, expires_at, next_path), nonce, expires_at)


# --- the functions ------------------------------------------------------------------------------


class LoginPages:
    """Warm /login and /callback containers wired to the module's stack and simulator."""

    def __init__(self, stores: EmulatorStores, prefix: str, table: str) -> None:
        self.prefix = prefix
        self._login = load_function("login")
        self._callback = load_function("callback")
        self._output = OutputCapture()  # after the functions made their logger
        self._stores = stores
        self._requests = 0
        self._table = table
        self._dynamodb = boto3.client("dynamodb")

    def forget(self, claims: list[StoredItem]) -> None:
        """Remove claims once checked, so that a nonce Hypothesis draws again is new again."""
        for claim in claims:
            self._dynamodb.delete_item(
                TableName=self._table, Key={"state_key": claim.attributes["state_key"]}
            )

    def call(
        self, function: str, request: BrowserRequest
    ) -> tuple[dict[str, Any], dict[str, Any], str, Changes]:
        """The answer, the event it answered, what was logged, and what was stored meanwhile."""
        self._requests += 1
        path = f"/{function}"
        api_event = request.event(path, f"{function}-{self._requests}")
        app = self._callback if function == "callback" else self._login
        self._stores.changes()
        response, logged = self._output.call(partial(app.handler, api_event, FakeLambdaContext()))
        return response, api_event, logged + repr(response), self._stores.changes()


@pytest.fixture(scope="module")
def module_sim() -> Iterator[KiteSimulator]:
    """``sim`` for a whole module."""
    with KiteSimulator(
        api_key=TEST_API_KEY, api_secret=TEST_API_SECRET, redirect_url=REDIRECT_URL, approved_platform=True
    ) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def pages(
    module_stack: ResourceValues,
    module_env: pytest.MonkeyPatch,
    stores: EmulatorStores,
    module_sim: KiteSimulator,
) -> Iterator[LoginPages]:
    prefix = f"kitehooks-prop-{uuid.uuid4().hex[:8]}/sessions"
    for name, value in callback_settings(module_stack, module_sim.url, prefix, kite_read_timeout="2").items():
        module_env.setenv(name, value)
    reset_layer_caches()
    yield LoginPages(stores, prefix, module_stack["LoginStatesTable"]["Ref"])
    reset_layer_caches()


def claim_is_allowed(request: CallbackRequest, api_event: dict[str, Any], changes: Changes) -> None:
    """A login-state item only for a live state of ours, sent with its nonce in a cookie."""
    if not changes.items:
        return
    [item] = changes.items
    signed = request.signed
    assert signed is not None, f"a claim for a state we did not sign: {item.attributes}"
    assert signed.expires_at > time.time() - 5, "a claim for an expired state"
    assert (api_event.get("queryStringParameters") or {}).get("state") == signed.state
    assert any(cookie.partition("=")[2].strip() == signed.nonce for cookie in api_event.get("cookies", []))
    assert item.attributes["state_key"] == {"S": hashlib.sha256(signed.nonce.encode()).hexdigest()}
    assert item.attributes["expires_at"] == {"N": str(signed.expires_at)}


# --- the properties -----------------------------------------------------------------------------


@property_settings(800)
@given(request=callback_requests())
@example(request=CallbackRequest(BrowserRequest(query="status=success&request_token=abcdefgh&state=a.b")))
def test_without_a_token_kite_issued_the_callback_refuses_and_keeps_at_most_the_state_claim(
    pages: LoginPages, request: CallbackRequest
) -> None:
    claims: list[StoredItem] = []
    for delivery in range(request.deliveries):
        response, api_event, output, changes = pages.call("callback", request.browser)
        status = check_page_answer(response)
        event(f"answered {status}")
        assert 400 <= status < 500, f"{status} without a token Kite issued"
        assert cookies_set(response) == {}, "a refused callback set a cookie"
        assert_no_secret(output)
        assert changes.messages == []
        assert changes.objects == []
        assert changes.secret_versions == [], "a session stored without a login"
        if delivery > 0:
            assert changes.items == [], "a replay stored a claim"
        claim_is_allowed(request, api_event, changes)
        if changes.items:
            event("state claimed")
            claims += changes.items
    pages.forget(claims)


@dataclass(frozen=True)
class LoginFlow:
    """A person who starts at /login, logs in at Kite, and comes back (perhaps twice)."""

    next_path: str | None = None
    extra_query: tuple[tuple[str, str], ...] = ()
    extra_cookies: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    scheme: str = "https"
    deliveries: int = 1


logins = st.builds(
    LoginFlow,
    next_path=st.none() | same_site_paths | next_values,
    extra_query=st.lists(
        st.tuples(any_text.filter(lambda name: name not in CALLBACK_PARAMETERS), any_text), max_size=2
    ).map(tuple),
    extra_cookies=cookie_parts.map(
        lambda cookies: tuple(c for c in cookies if c.partition("=")[0].strip() not in LOGIN_COOKIES)
    ),
    headers=extra_headers.map(tuple),
    scheme=st.sampled_from(["https", "https", "http"]),
    deliveries=st.integers(1, 2),
)


@property_settings(120)
@given(flow=logins)
@example(flow=LoginFlow(next_path="/" + "é" * 300))
def test_a_login_started_at_login_and_completed_at_kite_is_stored_once(
    pages: LoginPages, flow: LoginFlow
) -> None:
    query = "" if flow.next_path is None else query_string([("next", flow.next_path)], encoded=True)
    start = BrowserRequest(query=query, headers=flow.headers, scheme=flow.scheme)
    response, _, output, changes = pages.call("login", start)
    assert changes.nothing
    if check_page_answer(response) != 302:
        event("next refused at /login")
        return  # /login refused the next (a property of its own module)

    # At Kite: the simulator logs the user in and sends the browser back with a request_token.
    at_kite = requests.get(response["headers"]["Location"], allow_redirects=False, timeout=5)
    assert at_kite.status_code == 302
    kite_query = urlsplit(at_kite.headers["Location"]).query
    [request_token] = parse_qs(kite_query)["request_token"]
    callback = BrowserRequest(
        query="&".join([kite_query, *(query_string([pair], encoded=True) for pair in flow.extra_query)]),
        cookies=(*flow.extra_cookies, *(f"{name}={value}" for name, value in cookies_set(response).items())),
        headers=flow.headers,
        scheme=flow.scheme,
    )
    for delivery in range(flow.deliveries):
        answer, _, logged, changes = pages.call("callback", callback)
        output += logged
        status = check_page_answer(answer)
        event(f"answered {status}")
        assert changes.messages == []
        assert changes.objects == []
        if delivery > 0:  # the same redirect again: refused, nothing more stored
            assert 400 <= status < 500
            assert changes.nothing, f"a replay stored {changes}"
            continue
        assert status in (200, 303), answer["body"][:300]
        assert len(changes.items) == 1, "the state was not claimed once"
        [session] = changes.secret_versions
        assert session.name == f"{pages.prefix}/AB1234"
        assert session.secret_string is not None
        stored = json.loads(session.secret_string)
        assert stored["status"] == "active"
        # Kite issues a refresh_token only to approved platforms: check the tokens there are.
        tokens = [
            stored[name] for name in ("access_token", "refresh_token", "public_token") if stored.get(name)
        ]
        if status == 303:
            location = answer["headers"]["Location"]
            assert flow.next_path
            assert is_same_site_path(location)
            path_characters = "".join(chr(c) for c in range(0x21, 0x7F))
            assert unquote_to_bytes(location) == unquote_to_bytes(
                quote(flow.next_path, safe=path_characters, errors="surrogatepass")
            )
        else:
            assert not flow.next_path
    assert_no_secret(output, request_token, *tokens)


@property_settings(50)
@given(request=callback_requests(), method=methods.filter(lambda method: method.upper() != "GET"))
# Found by this property: any method but GET is answered 500 "Something went wrong" and logged
# as an unexpected error (the Event Handler's "no route" error reaches the catch-all page).
@example(request=CallbackRequest(BrowserRequest()), method="POST")
def test_a_method_the_route_does_not_serve_is_a_4xx(
    pages: LoginPages, request: CallbackRequest, method: str
) -> None:
    # API Gateway routes only GET /callback here; a misrouted API or a $default route would not.
    response, _, output, changes = pages.call("callback", replace(request.browser, method=method))
    status = check_page_answer(response, routed=False)
    assert 400 <= status < 500, status
    assert changes.nothing
    assert_no_secret(output)
