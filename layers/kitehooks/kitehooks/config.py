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
