"""Kite login, first half: ``/login`` sends the browser to Kite's login page with a signed state
and the cookie that binds the login to this browser. ``kitehooks.login.callback`` is the second half.
``/`` is a landing page that says what this is and links to ``/login``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from aws_lambda_powertools.shared.cookies import Cookie, SameSite

from kitehooks.config import LoginSettings
from kitehooks.credentials import ApiCredentials
from kitehooks.login import state as login_state

# Browsers keep a __Host- cookie only if it is Secure, has Path=/ and no Domain, and never let a
# sibling subdomain or a plain-HTTP page set one: nobody else can plant a login nonce.
_HOST_PREFIX = "__Host-"


@dataclass(frozen=True, slots=True)
class Page:
    """What to show: a page, or a redirect when ``location`` is set. Holds no token."""

    status_code: int
    title: str
    message: str
    location: str | None = None
    cookies: list[Cookie] = field(default_factory=list)
    # What the person can do now, shown under the message ("You can close this tab.").
    next_step: str | None = None
    # A link to show under the message, as (text, path on this API); the path gets the API's base.
    link: tuple[str, str] | None = None
    plain: bool = False  # neither a success nor a failure (the landing page)


def _cookie_name(name: str, secure: bool) -> str:
    # Over plain HTTP (local stack) browsers would refuse a prefixed cookie without Secure.
    return f"{_HOST_PREFIX}{name}" if secure else name


def state_cookie_name(secure: bool) -> str:
    """The login cookie's name: ``__Host-``-prefixed over HTTPS, plain over HTTP (local stack)."""
    return _cookie_name(login_state.STATE_COOKIE, secure)


def completed_cookie_name(secure: bool) -> str:
    """The completed-login markers' cookie, named like the login cookie."""
    return _cookie_name(login_state.COMPLETED_COOKIE, secure)


def _cookie(name: str, value: str, max_age: int, secure: bool) -> Cookie:
    return Cookie(
        name=name,
        value=value,
        path="/",  # and no Domain: both required by the __Host- prefix
        secure=secure,
        http_only=True,
        max_age=max_age,
        same_site=SameSite.LAX_MODE,  # sent on Kite's top-level redirect back, not on cross-site posts
    )


def state_cookie(value: str, max_age: int, secure: bool) -> Cookie:
    """The login cookie: the nonces of this browser's logins under way ("" and 0 clear it)."""
    return _cookie(state_cookie_name(secure), value, max_age, secure)


def completed_cookie(value: str, max_age: int, secure: bool) -> Cookie:
    return _cookie(completed_cookie_name(secure), value, max_age, secure)


def _origin(scheme: str, host: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit(f"{scheme}://{host}")
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    return ((parts.hostname or "").lower(), port)


def on_registered_host(
    redirect_url: str | None, host: str | None, secure: bool, path: str, raw_query: str
) -> Page | None:
    """None when ``/login`` was reached on the host Kite redirects back to (or that is unknown);
    else a 303 to the same ``/login`` on that host, so the login cookie lands where the callback
    will read it (``localhost`` and ``127.0.0.1`` are two hosts to a browser)."""
    if not redirect_url or not host:
        return None
    registered = urlsplit(redirect_url)
    if _origin(registered.scheme, registered.netloc) == _origin("https" if secure else "http", host):
        return None
    base = registered.path[: -len("callback")] if registered.path.endswith("/callback") else None
    target_path = f"{base}login" if base is not None else path
    target = f"{registered.scheme}://{registered.netloc}{target_path}" + (
        f"?{raw_query}" if raw_query else ""
    )
    return Page(
        303,
        "Log in on the registered host",
        f"Kite sends the browser back to {registered.netloc} only, so the login starts there.",
        location=target,
    )


def landing_page() -> Page:
    """What ``/`` shows: what this is and where to log in; nothing about any user."""
    return Page(
        200,
        "Connect your Kite account",
        "This service keeps the Kite Connect sessions of this app's users and receives Kite's "
        "order updates. To connect your Kite account, log in at /login; Kite then sends you "
        "back to a page that says whether the login worked.",
        link=("Log in with Kite", "/login"),
        plain=True,
    )


def begin_login(
    settings: LoginSettings,
    credentials: ApiCredentials,
    next_path: str | None,
    secure: bool,
    now: float,
    login_cookie: str | None = None,
) -> Page:
    """The redirect to Kite's login page, and the cookie that binds the login to this browser.
    ``login_cookie`` is the login cookie the browser sent: logins in its other tabs stay in it."""
    try:
        checked_next = login_state.check_return_path(next_path)
    except login_state.UnsafeReturnPath as error:
        return Page(400, "Cannot start the login", str(error), link=("Start again", "/login"))
    nonce = login_state.new_nonce()
    expires_at = int(now) + settings.state_ttl_seconds
    state = login_state.sign_state(credentials.api_secret, nonce, expires_at, checked_next)
    # /callback refuses a state longer than this before reading it: refuse here, before the user
    # logs in at Kite for nothing. The state is base64url and ".", which Kite's redirect_params
    # (URL-encoded inside the login URL) carry back unchanged.
    if len(state) > login_state.MAX_STATE_LENGTH:
        return Page(
            400,
            "Cannot start the login",
            "next is too long: use a shorter path",
            link=("Start again", "/login"),
        )
    query = urlencode(
        {"v": "3", "api_key": credentials.api_key, "redirect_params": urlencode({"state": state})}
    )
    return Page(
        302,
        "Redirecting to Kite",
        "Continue to Kite to log in.",
        location=f"{settings.kite_login_url}?{query}",
        cookies=[
            state_cookie(login_state.with_pending(login_cookie, nonce), settings.state_ttl_seconds, secure)
        ],
    )
