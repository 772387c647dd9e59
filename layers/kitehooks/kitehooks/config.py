"""Settings read once per container from the environment that ``template.yaml`` sets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

DEFAULT_MAX_POSTBACK_BYTES = 64 * 1024
DEFAULT_CREDENTIALS_CACHE_SECONDS = 300


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
class PostbackSettings:
    """What the postback path needs: where verified updates go, where undeliverable ones are parked."""

    queue_url: str
    undelivered_bucket: str
    credentials_secret_id: str
    credentials_cache_seconds: int
    max_postback_bytes: int


@cache
def postback_settings() -> PostbackSettings:
    return PostbackSettings(
        queue_url=_required("ORDER_UPDATES_QUEUE_URL"),
        undelivered_bucket=_required("UNDELIVERED_BUCKET"),
        credentials_secret_id=_required("API_CREDENTIALS_SECRET_ID"),
        credentials_cache_seconds=_positive_int(
            "CREDENTIALS_CACHE_SECONDS", DEFAULT_CREDENTIALS_CACHE_SECONDS
        ),
        max_postback_bytes=_positive_int("MAX_POSTBACK_BYTES", DEFAULT_MAX_POSTBACK_BYTES),
    )


def _user_ids(name: str) -> frozenset[str]:
    raw = os.environ.get(name, "")
    return frozenset(part.strip().upper() for part in raw.replace(";", ",").split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class LoginSettings:
    """What ``/login`` and ``/callback`` need. The callback-only settings are optional here and
    checked by :func:`callback_settings`."""

    credentials_secret_id: str
    credentials_cache_seconds: int
    kite_login_url: str
    kite_api_root: str
    state_ttl_seconds: int
    session_prefix: str
    login_states_table: str
    allowed_user_ids: frozenset[str]  # empty: every Kite user of the app may log in
    kite_read_timeout_seconds: int


@cache
def login_settings() -> LoginSettings:
    return LoginSettings(
        credentials_secret_id=_required("API_CREDENTIALS_SECRET_ID"),
        credentials_cache_seconds=_positive_int(
            "CREDENTIALS_CACHE_SECONDS", DEFAULT_CREDENTIALS_CACHE_SECONDS
        ),
        kite_login_url=_required("KITE_LOGIN_URL"),
        kite_api_root=os.environ.get("KITE_API_ROOT", "").strip(),
        state_ttl_seconds=_positive_int("LOGIN_STATE_TTL_SECONDS", 600),
        session_prefix=os.environ.get("SESSION_PREFIX", "").strip(),
        login_states_table=os.environ.get("LOGIN_STATES_TABLE", "").strip(),
        allowed_user_ids=_user_ids("ALLOWED_USER_IDS"),
        kite_read_timeout_seconds=_positive_int("KITE_READ_TIMEOUT_SECONDS", 10),
    )


@cache
def callback_settings() -> LoginSettings:
    settings = login_settings()
    for name, value in (
        ("KITE_API_ROOT", settings.kite_api_root),
        ("SESSION_PREFIX", settings.session_prefix),
        ("LOGIN_STATES_TABLE", settings.login_states_table),
    ):
        if not value:
            raise ConfigurationError(f"environment variable {name} is not set")
    return settings


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What the session function needs."""

    credentials_secret_id: str
    credentials_cache_seconds: int
    kite_api_root: str
    session_prefix: str
    kite_read_timeout_seconds: int


@cache
def session_settings() -> SessionSettings:
    return SessionSettings(
        credentials_secret_id=_required("API_CREDENTIALS_SECRET_ID"),
        credentials_cache_seconds=_positive_int(
            "CREDENTIALS_CACHE_SECONDS", DEFAULT_CREDENTIALS_CACHE_SECONDS
        ),
        kite_api_root=_required("KITE_API_ROOT"),
        session_prefix=_required("SESSION_PREFIX"),
        kite_read_timeout_seconds=_positive_int("KITE_READ_TIMEOUT_SECONDS", 10),
    )
