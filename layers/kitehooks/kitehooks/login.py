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


@dataclass(frozen=True, slots=True)
class Page:
    """What to show: a page, or a redirect when ``location`` is set. Holds no token."""

    status_code: int
    title: str
    message: str
    location: str | None = None
    cookies: list[Cookie] = field(default_factory=list)


def state_cookie(nonce: str, max_age: int, secure: bool) -> Cookie:
    return Cookie(
        name=login_state.STATE_COOKIE,
        value=nonce,
        path="/",
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
