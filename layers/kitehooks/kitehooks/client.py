"""Stored Kite sessions for your own functions: read one, or get an official client that uses it.

    from kitehooks.client import SessionUnavailable, kite_connect

    kite = kite_connect("AB1234")      # kiteconnect.KiteConnect, access token set
    kite.place_order(...)

Settings (environment, both printed by the stack's outputs):

- ``KITEHOOKS_SESSION_PREFIX``: where sessions are stored, ``<prefix>/<user_id>`` in Secrets Manager;
- ``KITEHOOKS_SESSION_FUNCTION``: the name or ARN of kitehooks' SessionFunction, told about a token
  Kite refused (``kite_connect`` only);
- ``KITE_API_ROOT`` (optional): another Kite endpoint, e.g. the local Kite simulator.

An active session is cached per container for ``SESSION_CACHE_SECONDS`` (60 s), so a warm function
reads Secrets Manager at most once a minute per user. A cached session is never returned at or
after its ``expires_at`` (06:00 IST), and one the expiry hook reported dead is read again.

``kiteconnect`` is imported only by :func:`kite_connect`: the user's function installs it, the
layer does not carry it. Nothing here logs or raises with a token in it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import BotoCoreError, ClientError

from kitehooks import aws, clock
from kitehooks.config import ConfigurationError
from kitehooks.sessions.store import (
    KiteSession,
    SessionNotFound,
    SessionStore,
    SessionStoreError,
    valid_user_id,
)

if TYPE_CHECKING:
    from kiteconnect import KiteConnect

__all__ = [
    "SESSION_CACHE_SECONDS",
    "ConfigurationError",
    "Session",
    "SessionStoreUnreachable",
    "SessionUnavailable",
    "forget",
    "get_session",
    "kite_connect",
    "report_dead_session",
]

SESSION_PREFIX_ENV = "KITEHOOKS_SESSION_PREFIX"
SESSION_FUNCTION_ENV = "KITEHOOKS_SESSION_FUNCTION"
KITE_API_ROOT_ENV = "KITE_API_ROOT"
# Short enough that a logout or a new login elsewhere is seen within a minute; long enough that a
# busy function does not pay a Secrets Manager call (and its price) on every invocation.
SESSION_CACHE_SECONDS = 60.0

Session = KiteSession
UnavailableStatus = Literal["expired", "revoked", "missing"]

logger = logging.getLogger(__name__)


class SessionUnavailable(RuntimeError):
    """The user has no active session: ``status`` is ``expired``, ``revoked`` or ``missing``.

    The user has to log in again (``/login``); retrying cannot help.
    """

    def __init__(self, user_id: str, status: UnavailableStatus, detail: str) -> None:
        super().__init__(f"no active Kite session for {user_id} ({status}): {detail}")
        self.user_id = user_id
        self.status: UnavailableStatus = status


class SessionStoreUnreachable(RuntimeError):
    """Secrets Manager could not be read (permissions, network, throttling), or the secret is not a
    kitehooks session: a fault of the deployment, not the user's to fix by logging in. The message
    names the AWS error code, never a token."""


# (prefix, user_id) -> (session, when it was read). One lock: users' code may call from threads.
_cache: dict[tuple[str, str], tuple[KiteSession, datetime]] = {}
_cache_lock = threading.Lock()


def _setting(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(
            f"environment variable {name} is not set (the kitehooks stack's outputs give its value)"
        )
    return value


def forget(user_id: str | None = None) -> None:
    """Drop the cached session of ``user_id`` (of everyone when None), so the next
    :func:`get_session` reads the store."""
    with _cache_lock:
        for key in [key for key in _cache if user_id in (None, key[1])]:
            del _cache[key]


def get_session(user_id: str) -> Session:
    """The active session of ``user_id``.

    Raises :class:`SessionUnavailable` (``expired``, ``revoked``, ``missing``) when there is none,
    :class:`SessionStoreUnreachable` when Secrets Manager cannot be read, ``ConfigurationError``
    when ``KITEHOOKS_SESSION_PREFIX`` is not set, and ``ValueError`` for a malformed user id.
    """
    if not valid_user_id(user_id):
        raise ValueError(f"{user_id!r} is not a Kite user id such as AB1234")
    prefix = _setting(SESSION_PREFIX_ENV)
    key = (prefix, user_id)
    now = clock.utc_now()
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        session, read_at = cached
        fresh = timedelta(0) <= now - read_at < timedelta(seconds=SESSION_CACHE_SECONDS)
        if fresh and now < _expires_at(session):
            return session
        forget(user_id)
    session = _read(prefix, user_id)
    if session.status == "revoked":
        raise SessionUnavailable(user_id, "revoked", "logged out; log in again")
    if session.status != "active":
        raise SessionUnavailable(user_id, "expired", f"ended before {session.expires_at}; log in again")
    if now >= _expires_at(session):
        # Kite has ended it at 06:00 IST even if the daily expiry has not marked it yet.
        raise SessionUnavailable(user_id, "expired", f"Kite ended it at {session.expires_at}; log in again")
    with _cache_lock:
        _cache[key] = (session, now)
    return session


def _read(prefix: str, user_id: str) -> KiteSession:
    try:
        secrets = aws.secretsmanager_client()
    except BotoCoreError as error:  # e.g. no region: Lambda sets one, a shell may not
        raise ConfigurationError(f"cannot make a Secrets Manager client: {error}") from None
    try:
        return SessionStore(secrets, prefix).get(user_id)
    except SessionNotFound:
        raise SessionUnavailable(user_id, "missing", "no stored session: log in first") from None
    except SessionStoreError as error:
        raise SessionStoreUnreachable(str(error)) from None


def _expires_at(session: KiteSession) -> datetime:
    try:
        return datetime.fromisoformat(session.expires_at)
    except ValueError:
        raise SessionStoreUnreachable(
            f"the session of {session.user_id} has no valid expires_at: not a kitehooks session"
        ) from None


def report_dead_session(user_id: str, function_name: str) -> None:
    """Ask SessionFunction to check the user's session at Kite, and forget the cached copy.

    An asynchronous (``Event``) invocation: the caller does not wait for the check. A failure to
    report is logged, not raised: the caller is already handling Kite's TokenException.
    """
    forget(user_id)
    try:
        aws.lambda_client().invoke(
            FunctionName=function_name,
            InvocationType="Event",
            Payload=json.dumps({"action": "check", "user_id": user_id}).encode(),
        )
    except (BotoCoreError, ClientError) as error:
        logger.warning(
            "could not report the dead Kite session of %s to %s (%s)",
            user_id,
            function_name,
            aws.error_code(error),
        )
    else:
        logger.info("reported the dead Kite session of %s to %s", user_id, function_name)


def _expiry_hook(user_id: str, function_name: str) -> Callable[[], None]:
    reported = False

    def hook() -> None:
        # Once per client: code that retries a dead token should not flood SessionFunction.
        nonlocal reported
        if not reported:
            reported = True
            report_dead_session(user_id, function_name)

    return hook


def kite_connect(user_id: str) -> KiteConnect:
    """An official ``kiteconnect.KiteConnect`` for the active session of ``user_id``.

    The access token is set, ``root`` is ``KITE_API_ROOT`` when set, and the session-expiry hook
    reports a token Kite refuses (TokenException) to SessionFunction, which checks the session
    and marks it ended. Raises as :func:`get_session` does, and ``ConfigurationError`` when
    ``KITEHOOKS_SESSION_FUNCTION`` is not set.
    """
    session = get_session(user_id)
    function_name = _setting(SESSION_FUNCTION_ENV)
    try:
        from kiteconnect import KiteConnect
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "kitehooks.client.kite_connect needs the kiteconnect package in your function "
            "(add kiteconnect to its requirements.txt); the kitehooks layer does not carry it"
        ) from None
    root = os.environ.get(KITE_API_ROOT_ENV, "").strip() or None
    kite = KiteConnect(api_key=session.api_key, access_token=session.access_token, root=root)
    kite.set_session_expiry_hook(_expiry_hook(user_id, function_name))
    return kite
