"""Settings read once per container from the environment that ``template.yaml`` sets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

DEFAULT_MAX_POSTBACK_BYTES = 16 * 1024  # Kite sends about 1.5 KB
DEFAULT_CREDENTIALS_CACHE_SECONDS = 300
DEFAULT_LOGIN_STATE_TTL_SECONDS = 600  # long enough to log in at Kite, short enough to be useless later


class ConfigurationError(RuntimeError):
    """A required setting is missing or malformed: a deployment fault, not a caller's."""


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set")
    return value


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"environment variable {name} must be positive, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class CredentialsSettings:
    """Where every function finds the app's Kite credentials, and how long it may cache them."""

    secret_id: str
    cache_seconds: int


@cache
def credentials_settings() -> CredentialsSettings:
    return CredentialsSettings(
        secret_id=_required("API_CREDENTIALS_SECRET_ID"),
        cache_seconds=_positive_int("CREDENTIALS_CACHE_SECONDS", DEFAULT_CREDENTIALS_CACHE_SECONDS),
    )


@dataclass(frozen=True, slots=True)
class PostbackSettings:
    """What the postback path needs: where verified updates go, where undeliverable ones are parked."""

    queue_url: str
    undelivered_bucket: str
    max_postback_bytes: int
    # The order ledger's table with OrderConfirmation=on; None with off (nothing is recorded).
    order_ledger_table: str | None = None


def order_ledger_table() -> str | None:
    return os.environ.get("ORDER_LEDGER_TABLE", "").strip() or None


@cache
def postback_settings() -> PostbackSettings:
    return PostbackSettings(
        queue_url=_required("ORDER_UPDATES_QUEUE_URL"),
        undelivered_bucket=_required("UNDELIVERED_BUCKET"),
        max_postback_bytes=_positive_int("MAX_POSTBACK_BYTES", DEFAULT_MAX_POSTBACK_BYTES),
        order_ledger_table=order_ledger_table(),
    )


@dataclass(frozen=True, slots=True)
class LoginSettings:
    """What ``/login`` needs to send a browser to Kite."""

    kite_login_url: str
    state_ttl_seconds: int
    # The Redirect URL registered for the app at Kite, when known: Kite sends every login back to
    # that one URL, so the login cookie must be set on its host. Deployed without a custom domain
    # the API has one host and it may be absent.
    redirect_url: str | None


def _http_url(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"environment variable {name} must be an http(s) URL")
    return value


@cache
def login_settings() -> LoginSettings:
    return LoginSettings(
        kite_login_url=_required("KITE_LOGIN_URL"),
        state_ttl_seconds=_positive_int("LOGIN_STATE_TTL_SECONDS", DEFAULT_LOGIN_STATE_TTL_SECONDS),
        redirect_url=_http_url("REDIRECT_URL"),
    )


@dataclass(frozen=True, slots=True)
class KiteSettings:
    """Where Kite's API is, and how long to wait for it."""

    api_root: str
    read_timeout_seconds: int


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What the functions that keep sessions (callback, session) need."""

    kite: KiteSettings
    session_prefix: str


@cache
def session_settings() -> SessionSettings:
    return SessionSettings(
        kite=KiteSettings(
            api_root=_required("KITE_API_ROOT"),
            read_timeout_seconds=_positive_int("KITE_READ_TIMEOUT_SECONDS", 10),
        ),
        session_prefix=_required("SESSION_PREFIX"),
    )


def _user_ids(name: str) -> frozenset[str]:
    raw = os.environ.get(name, "")
    return frozenset(part.strip().upper() for part in raw.replace(";", ",").split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class CallbackSettings:
    """What ``/callback`` needs on top of the session settings."""

    sessions: SessionSettings
    login_states_table: str
    allowed_user_ids: frozenset[str]  # empty: every Kite user of the app may log in


@cache
def callback_settings() -> CallbackSettings:
    return CallbackSettings(
        sessions=session_settings(),
        login_states_table=_required("LOGIN_STATES_TABLE"),
        allowed_user_ids=_user_ids("ALLOWED_USER_IDS"),
    )
