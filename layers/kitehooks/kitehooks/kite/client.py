"""A small Kite Connect HTTP client for the session endpoints and the order book, on ``requests``.

Written here rather than taken from the official ``kiteconnect`` package: that package pulls in
Twisted and autobahn for its ticker, far too much for a Lambda layer, and it retries nothing we
would want retried anyway. The callback, session and reconciler functions import this module;
the postback path never does.

A request_token works once, so nothing here retries: a read timeout may mean Kite consumed it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import requests

from kitehooks.config import KiteSettings
from kitehooks.deadline import Deadline, DeadlineExceeded
from kitehooks.kite.checksum import session_checksum

KITE_VERSION_HEADER = {"X-Kite-Version": "3"}
# (connect, read) seconds: a slow Kite must not hold the function, nor the user, for long.
CONNECT_TIMEOUT_SECONDS = 3.05
DEFAULT_TIMEOUT = (CONNECT_TIMEOUT_SECONDS, 10.0)


class KiteError(Exception):
    """A failed call to Kite. ``str(error)`` never holds a token, checksum or secret."""

    def __init__(self, message: str, error_type: str = "", http_status: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.http_status = http_status


class KiteTokenError(KiteError):
    """TokenException: the request/refresh/access token is invalid, expired or already used."""


class KiteInputError(KiteError):
    """InputException: Kite refused the parameters."""


class KiteServerError(KiteError):
    """Any other Kite exception (GeneralException, DataException, NetworkException, ...)."""


class KiteUnavailable(KiteError):
    """Kite could not be reached (connection refused, DNS, TLS)."""


class KiteTimeout(KiteError):
    """Kite did not answer in time."""


class KiteBadResponse(KiteError):
    """Kite answered something that is not its JSON envelope (e.g. an HTML error page)."""


_ERRORS_BY_TYPE: dict[str, type[KiteError]] = {
    "TokenException": KiteTokenError,
    "InputException": KiteInputError,
}


@dataclass(frozen=True, slots=True)
class SessionGrant:
    """What ``POST /session/token`` returns, trimmed to what kitehooks keeps."""

    user_id: str
    user_name: str
    api_key: str
    access_token: str = field(repr=False)
    public_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    login_time: str


class KiteClient:
    """Kite's session endpoints. With a ``deadline``, each call's whole wall time is bounded by
    its (connect + read) timeouts and by the deadline: requests' timeouts alone bound each socket
    read, so a Kite that trickles a byte a second could hold a call for ever."""

    @classmethod
    def from_settings(
        cls, settings: KiteSettings, api_key: str, deadline: Deadline | None = None
    ) -> KiteClient:
        # A new HTTP session per client, not one pooled per container: a kept-alive connection
        # that Kite closed while the container was frozen could fail mid-send, and a single-use
        # request_token must not be left in doubt. Logins are rare; the handshake is cheap.
        return cls(
            settings.api_root,
            api_key,
            timeout=(CONNECT_TIMEOUT_SECONDS, settings.read_timeout_seconds),
            deadline=deadline,
        )

    def __init__(
        self,
        api_root: str,
        api_key: str,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        deadline: Deadline | None = None,
    ) -> None:
        self._api_root = api_root.rstrip("/")
        self._api_key = api_key
        self._http = session or requests.Session()
        self._timeout = timeout
        self._deadline = deadline

    def _time_limit(self) -> AbstractContextManager[None]:
        if self._deadline is None:
            return nullcontext()
        return self._deadline.limit(self._timeout[0] + self._timeout[1])

    def exchange_request_token(self, request_token: str, api_secret: str) -> SessionGrant:
        data = self._call(
            "POST",
            "/session/token",
            form={
                "api_key": self._api_key,
                "request_token": request_token,
                "checksum": session_checksum(self._api_key, request_token, api_secret),
            },
        )
        return _grant(data, self._api_key)

    def renew_access_token(self, refresh_token: str, api_secret: str) -> dict[str, Any]:
        data = self._call(
            "POST",
            "/session/refresh_token",
            form={
                "api_key": self._api_key,
                "refresh_token": refresh_token,
                "checksum": session_checksum(self._api_key, refresh_token, api_secret),
            },
        )
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise KiteBadResponse("Kite's renew answer has no access_token")
        return data

    def invalidate_access_token(self, access_token: str) -> None:
        self._call("DELETE", "/session/token", query={"api_key": self._api_key, "access_token": access_token})

    def invalidate_refresh_token(self, refresh_token: str) -> None:
        """Revoke a refresh token (approved platforms): it can renew no session after this."""
        self._call(
            "DELETE", "/session/token", query={"api_key": self._api_key, "refresh_token": refresh_token}
        )

    def profile(self, access_token: str) -> dict[str, Any]:
        """``GET /user/profile``: Kite's cheapest call that proves an access token is alive.

        A dead token (expired, logged out, replaced by a login elsewhere) raises KiteTokenError.
        """
        data = self._call("GET", "/user/profile", access_token=access_token)
        if not isinstance(data, dict):
            raise KiteBadResponse("Kite's profile answer has no data object")
        return data

    def orders(self, access_token: str) -> list[dict[str, Any]]:
        """``GET /orders``: the day's orders of the token's user, each in its current state."""
        return _order_list(self._call("GET", "/orders", access_token=access_token), "orders")

    def order_history(self, access_token: str, order_id: str) -> list[dict[str, Any]]:
        """``GET /orders/{order_id}``: every state the order passed through, oldest first."""
        if not order_id.isalnum():  # Kite's order ids are digits; never a path of our making
            raise KiteInputError("not a Kite order_id")
        return _order_list(
            self._call("GET", f"/orders/{order_id}", access_token=access_token), "order history"
        )

    def _call(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        access_token: str | None = None,
    ) -> Any:
        headers = dict(KITE_VERSION_HEADER)
        if access_token is not None:  # a call made as the user, not as the app
            headers["Authorization"] = f"token {self._api_key}:{access_token}"
        try:
            with self._time_limit():
                response = self._http.request(
                    method,
                    self._api_root + path,
                    data=form,
                    params=query,
                    headers=headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                )  # not streamed: the body, trickled or not, is read inside the limit
        except (requests.Timeout, DeadlineExceeded):
            raise KiteTimeout(f"Kite did not answer {method} {path} in time") from None
        except requests.RequestException as error:
            # The exception text can quote the URL with its query (tokens): name only its kind.
            raise KiteUnavailable(
                f"could not reach Kite for {method} {path} ({type(error).__name__})"
            ) from None
        return _envelope_data(response, f"{method} {path}")


def _envelope_data(response: requests.Response, call: str) -> Any:
    try:
        envelope = response.json()
    except ValueError:
        content_type = response.headers.get("Content-Type", "unknown")
        raise KiteBadResponse(
            f"Kite answered {call} with HTTP {response.status_code} and {content_type}, not JSON",
            http_status=response.status_code,
        ) from None
    if not isinstance(envelope, dict) or envelope.get("status") not in ("success", "error"):
        raise KiteBadResponse(f"Kite answered {call} without its envelope", http_status=response.status_code)
    if envelope["status"] == "success" and response.status_code < 400:
        return envelope.get("data")
    error_type = str(envelope.get("error_type") or "GeneralException")
    error_class = _ERRORS_BY_TYPE.get(error_type, KiteServerError)
    message = str(envelope.get("message") or "no message")[:200]
    raise error_class(f"Kite refused {call}: {error_type}: {message}", error_type, response.status_code)


def _order_list(data: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise KiteBadResponse(f"Kite's {what} answer is not a list")
    return [entry for entry in data if isinstance(entry, dict)]


def _grant(data: Any, api_key: str) -> SessionGrant:
    if not isinstance(data, dict):
        raise KiteBadResponse("Kite's session answer has no data object")
    try:
        return SessionGrant(
            user_id=str(data["user_id"]),
            user_name=str(data.get("user_name") or data["user_id"]),
            api_key=str(data.get("api_key") or api_key),
            access_token=str(data["access_token"]),
            public_token=str(data.get("public_token") or ""),
            refresh_token=str(data.get("refresh_token") or ""),
            login_time=str(data.get("login_time") or ""),
        )
    except KeyError as missing:
        raise KiteBadResponse(f"Kite's session answer lacks {missing}") from None
