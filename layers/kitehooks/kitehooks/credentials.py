"""The app's Kite API credentials, read from Secrets Manager through Powertools Parameters.

Parameters caches the secret for ``max_age`` seconds, so a warm container reads Secrets Manager
once per TTL, not once per request.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

PLACEHOLDER = "REPLACE_ME"


class CredentialsUnavailable(RuntimeError):
    """The credentials secret could not be read or still holds the template's placeholder."""


class CredentialsUnreachable(CredentialsUnavailable):
    """Secrets Manager did not answer: reading again at once would only spend more time."""


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    api_key: str
    api_secret: str = field(repr=False)  # never shown by repr(), so never in a log line


def _service_failed(error: BaseException) -> bool:
    """No answer (refused, timed out), or Secrets Manager failing or throttling: unlike a missing
    secret or a denied read, nothing a second read at once could fix."""
    if isinstance(error, BotoCoreError):
        return True
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(error.response.get("Error", {}).get("Code", ""))
        return status >= 500 or "Throttl" in code
    return False


def parse_credentials(value: Any) -> ApiCredentials:
    """The credentials secret's JSON value, checked: the rules every reader of the secret applies."""
    if not isinstance(value, dict):
        raise CredentialsUnavailable('credentials secret must be JSON {"api_key": ..., "api_secret": ...}')
    api_key, api_secret = value.get("api_key"), value.get("api_secret")
    if not isinstance(api_key, str) or not isinstance(api_secret, str) or not api_key or not api_secret:
        raise CredentialsUnavailable("credentials secret must hold non-empty api_key and api_secret")
    if PLACEHOLDER in (api_key, api_secret):
        raise CredentialsUnavailable(
            "credentials secret still holds the placeholder: put your Kite app's api_key and api_secret in it"
        )
    return ApiCredentials(api_key=api_key, api_secret=api_secret)


class CredentialsStore:
    """Reads and caches one credentials secret.

    A value that is cached but no longer right (the placeholder after the real credentials were
    put in, or a rotated api_secret) is re-read by :meth:`refresh`, at most once per
    ``min_refresh_seconds``, so bad requests cannot drive up Secrets Manager reads.
    """

    def __init__(self, secret_id: str, cache_seconds: int, min_refresh_seconds: float = 30.0) -> None:
        self._secret_id = secret_id
        self._cache_seconds = cache_seconds
        self._min_refresh_seconds = min_refresh_seconds
        self._provider: SecretsProvider | None = None
        self._last_forced = float("-inf")
        # The credentials last read and checked, and until when they count as fresh: the warm
        # path gets them without the provider's cache lookup, the parse, or a time limit.
        self._current: ApiCredentials | None = None
        self._current_until = float("-inf")

    def cached(self) -> ApiCredentials | None:
        """The credentials last read, while ``cache_seconds`` last; ``None`` when a read is due."""
        if self._current is not None and time.monotonic() < self._current_until:
            return self._current
        return None

    def _secrets(self) -> SecretsProvider:
        if self._provider is None:
            # Imported on first use: Parameters pulls in every provider and costs ~100 ms at import.
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            from kitehooks.aws import secretsmanager_client

            # The container's own client: the provider would otherwise build a boto3 session of
            # its own (tens of ms on the first request) with retries we do not bound.
            self._provider = SecretsProvider(boto3_client=secretsmanager_client())
        return self._provider

    def _read(self, force_fetch: bool) -> ApiCredentials:
        from aws_lambda_powertools.utilities.parameters.exceptions import TransformParameterError

        try:
            value = self._secrets().get(
                self._secret_id, max_age=self._cache_seconds, transform="json", force_fetch=force_fetch
            )
        except TransformParameterError:
            # The provider's own message quotes the secret's value: name only the kind of failure.
            raise CredentialsUnavailable(
                f"credentials secret {self._secret_id} is not JSON: it must hold api_key and api_secret"
            ) from None
        except Exception as error:
            # Powertools wraps the botocore error: look through to it.
            cause = error.__cause__ or error.__context__ or error
            message = f"could not read credentials secret {self._secret_id} ({type(cause).__name__})"
            if _service_failed(cause):  # a re-read now would only spend the time parking needs
                raise CredentialsUnreachable(message) from None
            raise CredentialsUnavailable(message) from None
        credentials = parse_credentials(value)
        self._current, self._current_until = credentials, time.monotonic() + self._cache_seconds
        return credentials

    def get(self) -> ApiCredentials:
        """The cached credentials; if they are unusable (not unreachable), one rate-limited fresh read."""
        current = self.cached()
        if current is not None:
            return current
        try:
            return self._read(force_fetch=False)
        except CredentialsUnreachable:
            raise  # a second read now would only spend the time that parking the postback needs
        except CredentialsUnavailable:
            fresh = self.refresh()
            if fresh is None:
                raise
            return fresh

    def refresh(self) -> ApiCredentials | None:
        """A fresh read if none was forced recently, else ``None``."""
        now = time.monotonic()
        if now - self._last_forced < self._min_refresh_seconds:
            return None
        self._last_forced = now
        return self._read(force_fetch=True)


@cache
def credentials_store(secret_id: str, cache_seconds: int) -> CredentialsStore:
    """One store (and so one cache) per secret per container."""
    min_refresh = float(os.environ.get("CREDENTIALS_MIN_REFRESH_SECONDS") or 30)
    return CredentialsStore(secret_id, cache_seconds, min_refresh_seconds=min_refresh)


def api_credentials() -> ApiCredentials:
    """This function's credentials, from the secret its environment names (cached per container)."""
    from kitehooks.config import credentials_settings

    settings = credentials_settings()
    return credentials_store(settings.secret_id, settings.cache_seconds).get()
