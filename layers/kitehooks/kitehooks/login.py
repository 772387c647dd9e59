"""Kite login, first half: ``/login`` sends the browser to Kite's login page with a signed state
and the cookie that binds the login to this browser. ``kitehooks.callback`` is the second half.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from aws_lambda_powertools.shared.cookies import Cookie, SameSite

from kitehooks import login_state
from kitehooks.config import LoginSettings
from kitehooks.credentials import ApiCredentials

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


def state_cookie_name(secure: bool) -> str:
    """The login cookie's name: ``__Host-``-prefixed over HTTPS, plain over HTTP (local stack),
    where browsers would refuse a prefixed cookie without Secure."""
    return f"{_HOST_PREFIX}{login_state.STATE_COOKIE}" if secure else login_state.STATE_COOKIE


def state_cookie(nonce: str, max_age: int, secure: bool) -> Cookie:
    return Cookie(
        name=state_cookie_name(secure),
        value=nonce,
        path="/",  # and no Domain: both required by the __Host- prefix
        secure=secure,
        http_only=True,
        max_age=max_age,
        same_site=SameSite.LAX_MODE,  # sent on Kite's top-level redirect back, not on cross-site posts
    )


def begin_login(
    settings: LoginSettings, credentials: ApiCredentials, next_path: str | None, secure: bool, now: float
) -> Page:
    """The redirect to Kite's login page, and the cookie that binds the login to this browser."""
    try:
        checked_next = login_state.check_return_path(next_path)
    except login_state.UnsafeReturnPath as error:
        return Page(400, "Cannot start the login", str(error))
    nonce = login_state.new_nonce()
    expires_at = int(now) + settings.state_ttl_seconds
    state = login_state.sign_state(credentials.api_secret, nonce, expires_at, checked_next)
    # /callback refuses a state longer than this before reading it: refuse here, before the user
    # logs in at Kite for nothing. The state is base64url and ".", which Kite's redirect_params
    # (URL-encoded inside the login URL) carry back unchanged.
    if len(state) > login_state.MAX_STATE_LENGTH:
        return Page(400, "Cannot start the login", "next is too long: use a shorter path")
    query = urlencode(
        {"v": "3", "api_key": credentials.api_key, "redirect_params": urlencode({"state": state})}
    )
    return Page(
        302,
        "Redirecting to Kite",
        "Continue to Kite to log in.",
        location=f"{settings.kite_login_url}?{query}",
        cookies=[state_cookie(nonce, settings.state_ttl_seconds, secure)],
    )
