"""Kite login, second half: ``/callback`` checks the state, exchanges the request_token once and
stores the session. Each step is a rule of Kite's login flow; the handler only translates HTTP.

Each step runs inside the invocation's deadline, and the exchange leaves time to store the
session (and, if that fails, to end the Kite session it created), so the user always gets one of
these pages before API Gateway gives up at 30 s.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime

from aws_lambda_powertools import Logger
from aws_lambda_powertools.shared.cookies import Cookie

from kitehooks import aws
from kitehooks.clock import IST
from kitehooks.config import DEFAULT_LOGIN_STATE_TTL_SECONDS, CallbackSettings
from kitehooks.credentials import ApiCredentials
from kitehooks.deadline import Deadline, DeadlineExceeded
from kitehooks.kite import client as kite
from kitehooks.login import state as login_state
from kitehooks.login import used_states
from kitehooks.login.start import Page, completed_cookie, state_cookie
from kitehooks.sessions.events import SessionEvents, session_started
from kitehooks.sessions.store import (
    KiteSession,
    SessionStore,
    SessionStoreError,
    SessionWriteRefused,
    new_session,
)

logger = Logger(child=True)

_REQUEST_TOKEN = re.compile(r"[A-Za-z0-9]{8,64}")

# The most a login-state claim in DynamoDB may take (two attempts and their back-off).
CLAIM_SECONDS = 6.0
# Kept back from the exchange: storing the session (two attempts), then, if that fails, ending
# the Kite session it created.
STORE_RESERVE_SECONDS = 9.0
INVALIDATE_RESERVE_SECONDS = 3.0
# Within that reserve: reading the session back after a write whose answer was lost.
READ_BACK_SECONDS = 2.0
# Below this there is no point in spending the single-use request_token.
MIN_EXCHANGE_SECONDS = 2.0
CLOSE_TAB = "You can close this tab."


@dataclass(frozen=True, slots=True)
class BrowserCookies:
    """The login cookies the browser sent: its logins under way, and its completed ones."""

    login: str | None = None
    completed: str | None = None


def _without_this_login(cookies: BrowserCookies, nonce: str, secure: bool) -> list[Cookie]:
    """The login cookie once this login's nonce has done its work, whatever the outcome: the
    nonces of logins in other tabs stay; with none left, the cookie is cleared."""
    remaining = login_state.without_pending(cookies.login, nonce)
    if remaining == (cookies.login or ""):
        return []
    # The other tabs' states expire by their own clock; the cookie only needs to outlive them.
    max_age = DEFAULT_LOGIN_STATE_TTL_SECONDS if remaining else 0
    return [state_cookie(remaining, max_age, secure)]


def complete_login(
    settings: CallbackSettings,
    credentials: ApiCredentials,
    query: dict[str, str],
    cookies: BrowserCookies,
    secure: bool,
    now: datetime,
    deadline: Deadline,
    base: str = "",
) -> Page:
    """Kite's redirect back: state, then status, then the token exchange, then the session."""
    try:
        checked = login_state.read_state(credentials.api_secret, query.get("state"))
    except login_state.StateRejected as rejection:
        # Whose login this was is unknown: the cookie, with other tabs' logins in it, stays.
        logger.warning("login state rejected", extra={"reason": str(rejection)})
        return Page(400, "Login could not be completed", str(rejection))
    used_cookie = _without_this_login(cookies, checked.nonce, secure)

    def page(status_code: int, title: str, message: str) -> Page:
        return Page(status_code, title, message, cookies=used_cookie)

    # A reload or Back of the greeting page: this browser completed this very login. Say so,
    # before the expiry and single-use checks that would call it a failure; nothing is repeated.
    completed_as = login_state.completed_as(
        credentials.api_secret, cookies.completed, checked.nonce, now.timestamp()
    )
    if completed_as is not None:
        logger.info("completed login shown again")
        who = f" to Kite as {completed_as}" if completed_as else " to Kite"
        return Page(
            200,
            "You are logged in",
            f"You are logged in{who}: this login was already completed, so nothing more was done.",
            cookies=used_cookie,
            next_step=CLOSE_TAB,
        )

    try:
        login_state.check_fresh(checked, now.timestamp())
        login_state.check_browser(checked, cookies.login)
    except login_state.StateRejected as rejection:
        logger.warning("login state rejected", extra={"reason": str(rejection)})
        return page(400, "Login could not be completed", str(rejection))

    try:
        with deadline.limit(CLAIM_SECONDS, keep=STORE_RESERVE_SECONDS + MIN_EXCHANGE_SECONDS):
            first_use = used_states.claim(
                aws.dynamodb_client(),
                settings.login_states_table,
                login_state.nonce_key(checked.nonce),
                checked.expires_at,
            )
    except (used_states.StateStoreUnavailable, DeadlineExceeded) as error:
        logger.error("cannot record login state", extra={"reason": str(error) or "DynamoDB timed out"})
        return page(503, "Login is unavailable", "Please try again in a minute: start again from /login.")
    if not first_use:
        logger.warning("login state replayed")
        return page(
            400, "Login could not be completed", "this login link was already used: start again from /login"
        )

    status = query.get("status", "")
    if status != "success":
        shown = status if re.fullmatch(r"[a-z_]{1,32}", status) else "unknown"
        return page(
            400, "Login was not completed", f"Kite reports the login as '{shown}'. Start again from /login."
        )
    request_token = query.get("request_token", "")
    if not _REQUEST_TOKEN.fullmatch(request_token):
        what = "missing" if not request_token else "malformed"
        return page(
            400, "Login could not be completed", f"Kite's request_token is {what}: start again from /login"
        )

    client = kite.KiteClient.from_settings(settings.sessions.kite, credentials.api_key, deadline)
    try:
        if deadline.budget(keep=STORE_RESERVE_SECONDS) < MIN_EXCHANGE_SECONDS:
            raise kite.KiteTimeout("no time left to exchange the request_token")
        with deadline.limit(keep=STORE_RESERVE_SECONDS):
            grant = client.exchange_request_token(request_token, credentials.api_secret)
    except kite.KiteError as error:
        logger.warning(
            "request_token exchange failed", extra={"reason": str(error), "kind": type(error).__name__}
        )
        return page(*_exchange_failure(error))

    if settings.allowed_user_ids and grant.user_id.upper() not in settings.allowed_user_ids:
        logger.warning("login refused: user not allowed", extra={"kite_user_id": grant.user_id})
        _end_kite_session(client, grant.access_token)
        return page(403, "Not allowed", f"Kite user {grant.user_id} may not use this app.")

    session = new_session(
        user_id=grant.user_id,
        user_name=grant.user_name,
        api_key=grant.api_key,
        access_token=grant.access_token,
        public_token=grant.public_token,
        refresh_token=grant.refresh_token,
        login_time=grant.login_time,
        now=now,
    )
    store = SessionStore(aws.secretsmanager_client(), settings.sessions.session_prefix)
    try:
        with deadline.limit(keep=INVALIDATE_RESERVE_SECONDS):
            store.put(session)
    except SessionWriteRefused as error:
        logger.error("session not stored", extra={"reason": str(error)})
        _end_kite_session(client, grant.access_token)  # certainly not stored: leave no live token
        return page(
            503,
            "Login could not be saved",
            "Kite logged you in but the session could not be saved. Try again.",
        )
    except (SessionStoreError, DeadlineExceeded) as error:
        # No answer: the write may have been applied, or may still be. Ending the token could
        # leave the stored session holding a dead one, so it is only read back, never ended.
        logger.error("session write unconfirmed", extra={"reason": str(error) or "Secrets Manager timed out"})
        if not _stored_after_all(store, session, deadline):
            return page(
                503,
                "Login could not be saved",
                "Kite logged you in but the session could not be confirmed as saved. Try again.",
            )
        logger.info("session stored after all: its write's answer was lost")

    logger.info("session stored", extra={"kite_user_id": grant.user_id, "expires_at": session.expires_at})
    # After the write, within what is left of the deadline; a failure is logged and counted but
    # never fails the login: the session is stored, and the event only announces it.
    SessionEvents(aws.events_client(), deadline).send(session_started(session, now))
    until = int(now.timestamp()) + login_state.COMPLETED_SECONDS
    marker = login_state.with_completed(
        cookies.completed,
        login_state.completed_entry(credentials.api_secret, checked.nonce, grant.user_id, until),
        now.timestamp(),
    )
    done_cookies = [*used_cookie, completed_cookie(marker, login_state.COMPLETED_SECONDS, secure)]
    if checked.next_path:
        # next is a path of this API, as its routes are written: under the stage when the URL has one.
        return Page(303, "Logged in", "Continue.", location=base + checked.next_path, cookies=done_cookies)
    expires = datetime.fromisoformat(session.expires_at).astimezone(IST)
    return Page(
        200,
        f"Welcome, {grant.user_name}",
        f"You are logged in to Kite as {grant.user_id}. "
        f"Your session is active until {expires:%H:%M} IST on {expires:%A %d %B %Y}.",
        cookies=done_cookies,
        next_step=CLOSE_TAB,
    )


def _exchange_failure(error: kite.KiteError) -> tuple[int, str, str]:
    if isinstance(error, kite.KiteTokenError):
        return (
            400,
            "Login expired",
            "Kite says this login has expired or was already used. Start again from /login.",
        )
    if isinstance(error, kite.KiteInputError):
        return 400, "Login could not be completed", "Kite refused the login request. Start again from /login."
    if isinstance(error, kite.KiteTimeout):
        return 504, "Kite is not answering", "Kite did not answer in time. Please try again in a minute."
    return (
        502,
        "Kite is unavailable",
        "Kite could not complete the login just now. Please try again in a minute.",
    )


def _stored_after_all(store: SessionStore, session: KiteSession, deadline: Deadline) -> bool:
    """Whether the stored session holds this login's token, read back within the reserve."""
    try:
        with deadline.limit(READ_BACK_SECONDS):
            current = store.get(session.user_id)
    except (SessionStoreError, DeadlineExceeded):
        return False
    return hmac.compare_digest(current.access_token.encode(), session.access_token.encode())


def _end_kite_session(client: kite.KiteClient, access_token: str) -> None:
    """Best effort: do not leave behind a live access token that nothing will use."""
    try:
        client.invalidate_access_token(access_token)
    except kite.KiteError as error:
        logger.warning("could not invalidate the unused access token", extra={"kind": type(error).__name__})
