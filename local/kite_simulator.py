"""A Kite Connect simulator: login redirects and sessions over HTTP, in Kite's shapes.

Used by the tests (with the official ``kiteconnect`` client as its peer) and by the local
dev stack. It speaks Kite Connect v3 for:

- ``GET /connect/login`` (the login page: redirects with a single-use request_token),
- ``POST /session/token`` (exchange), ``DELETE /session/token`` (logout, refresh token revocation),
- ``POST /session/refresh_token`` (renew), ``GET /user/profile``,
- the order routes (``GET /orders``, ``GET /orders/{order_id}``, ``POST /orders/{variety}``, ...) and
  their postbacks and controls (``/__sim/orders/...``): see :mod:`local.kite_orders`.

Test controls (delay, HTML error pages, login outcome, approved platform) are methods on
:class:`KiteSimulator` and, for a simulator in another process, ``POST /__sim/control`` with a JSON
body such as ``{"delay_seconds": 2.5, "html_errors": true, "login_status": "cancelled",
"approved_platform": true}`` (any subset). Refresh tokens are issued only to an approved platform,
as Kite does: off by default, as most apps are (``approved_platform=True``, or
``--approved-platform`` on the command line, turns it on). ``POST /__sim/kill`` with
``{"access_token": ...}``, ``{"user_id": ...}`` (that user's every live token) or ``{}`` (every
live one) ends access tokens the way a login elsewhere does: the next call with one gets Kite's
TokenException (403).

Several users: each session belongs to one Kite user, and ``GET /user/profile`` and the order
routes answer as that user. The browser login logs in as the simulator's user, or as the one set
by the control ``{"login_user_id": "CD5678"}``; ``POST /__sim/sessions`` with ``{"user_id":
"CD5678"}`` mints a live session for any user without a browser and answers it as
``POST /session/token`` would (tokens included: it is a test control, like ``/__sim/state``).
``GET /__sim/state`` returns the controls, counts and issued tokens; never the api_secret.

Run it standalone with ``python -m local.kite_simulator --port 5100``; it reads
``KITE_API_KEY`` (default ``kitehooks_local_key``), ``KITE_API_SECRET`` (default
``kitehooks_local_secret``) and ``KITE_SIM_USER_ID`` (default ``AB1234``).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
import signal
import string
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from local.kite_orders import OrderApiError, OrderBook, is_order_path

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "DEFAULT_PORT",
    "DEFAULT_REDIRECT_URL",
    "DEFAULT_USER_ID",
    "ApiRequest",
    "KiteSimulator",
    "SimulatorStartError",
    "main",
]

DEFAULT_API_KEY = "kitehooks_local_key"
DEFAULT_API_SECRET = "kitehooks_local_secret"  # noqa: S105 - documented local dev default
DEFAULT_USER_ID = "AB1234"
DEFAULT_PORT = 5100
DEFAULT_REDIRECT_URL = "http://127.0.0.1:3000/callback"

# IST has no daylight saving, so a fixed offset is exact and needs no tz database.
IST = timezone(timedelta(hours=5, minutes=30), "IST")

_TOKEN_ALPHABET = string.ascii_letters + string.digits
_TOKEN_LENGTH = 32
_MAX_BODY_BYTES = 64 * 1024
_REDACTED = "[redacted]"

_EXCEPTION_STATUS = {
    "TokenException": HTTPStatus.FORBIDDEN,
    "PermissionException": HTTPStatus.FORBIDDEN,
    "InputException": HTTPStatus.BAD_REQUEST,
    "OrderException": HTTPStatus.INTERNAL_SERVER_ERROR,
    "GeneralException": HTTPStatus.INTERNAL_SERVER_ERROR,
    "DataException": HTTPStatus.BAD_GATEWAY,
    "NetworkException": HTTPStatus.SERVICE_UNAVAILABLE,
}

_MSG_INVALID_OR_EXPIRED = "Token is invalid or has expired."
_MSG_BAD_AUTH = "Incorrect `api_key` or `access_token`."

_PROXY_ERROR_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)

log = logging.getLogger("kitehooks.kite_simulator")


class SimulatorStartError(RuntimeError):
    """The simulator could not listen on its host and port."""


@dataclass(frozen=True)
class ApiRequest:
    """One API request as the simulator received it (login page and /__sim calls excluded)."""

    method: str
    path: str
    query: Mapping[str, str]
    form: Mapping[str, str]
    received_at: float = field(compare=False)


@dataclass
class _Session:
    user_id: str
    access_token: str
    public_token: str
    refresh_token: str
    login_time: str


class _KiteError(Exception):
    """An error answered in Kite's error envelope."""

    def __init__(self, error_type: str, message: str, status: HTTPStatus | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status or _EXCEPTION_STATUS.get(error_type, HTTPStatus.INTERNAL_SERVER_ERROR)


def _new_token() -> str:
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(_TOKEN_LENGTH))


def _sha256_hex(*parts: str) -> str:
    return hashlib.sha256("".join(parts).encode("utf-8")).hexdigest()


def _ist_now() -> str:
    return datetime.now(IST).strftime("%Y-%m-%d %H:%M:%S")


def _require(form: Mapping[str, str], *names: str) -> list[str]:
    missing = [name for name in names if not form.get(name)]
    if missing:
        raise _KiteError(
            "InputException", f"Missing or empty field(s): {', '.join(f'`{m}`' for m in missing)}."
        )
    return [form[name] for name in names]


class KiteSimulator:
    """An in-process Kite Connect server for login and sessions, with test controls."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        redirect_url: str,
        user_id: str = DEFAULT_USER_ID,
        user_name: str = "Arjun Bhat",
        host: str = "127.0.0.1",
        port: int = 0,
        request_token_ttl: float = 120.0,
        approved_platform: bool = False,
        log_requests: bool = False,
        postback_url: str | None = None,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must be non-empty")
        self.api_key = api_key
        self._api_secret = api_secret
        self.redirect_url = redirect_url
        self.user_id = user_id
        self.user_name = user_name
        self.host = host
        self.port = port
        self.request_token_ttl = request_token_ttl
        self._approved_platform = approved_platform
        self.log_requests = log_requests

        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

        self._delay = 0.0
        self._html_errors = False
        self._login_status = "success"
        self._login_user_id = user_id
        # request_token -> the user it logs in (the login user when it was issued).
        self._request_token_users: dict[str, str] = {}
        # request_token -> monotonic issue time; removed when consumed or found expired.
        self._pending_request_tokens: dict[str, float] = {}
        self._issued_request_tokens: list[str] = []
        self._sessions_by_access: dict[str, _Session] = {}
        self._sessions_by_refresh: dict[str, _Session] = {}
        self._api_requests: list[ApiRequest] = []
        self.orders = OrderBook(
            api_key=api_key, api_secret=api_secret, user_id=user_id, postback_url=postback_url
        )

    def __repr__(self) -> str:
        # The secret stays out of reprs, which end up in tracebacks and test reports.
        return f"KiteSimulator(url={self.url if self._server else None!r}, api_key={self.api_key!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen and serve in a daemon thread. Raises SimulatorStartError if the port is taken."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        try:
            server = ThreadingHTTPServer((self.host, self.port), _make_handler(self))
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise SimulatorStartError(f"cannot listen on {self.host}:{self.port}: {reason}") from exc
        self._stopping.clear()
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="kite-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        # Wakes handlers sleeping in a simulated delay so shutdown is not held up by them.
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:5100`` (the API root and the login page host)."""
        if self._server is None:
            raise RuntimeError("simulator is not running")
        return f"http://{self.host}:{self.port}"

    def login_url(self, redirect_params: Mapping[str, str] | None = None) -> str:
        """The login page URL for this simulator's api_key, as Kite's would be."""
        query = {"v": "3", "api_key": self.api_key}
        if redirect_params:
            query["redirect_params"] = urlencode(dict(redirect_params))
        return f"{self.url}/connect/login?{urlencode(query)}"

    # -- test controls ------------------------------------------------------------------------

    def set_delay(self, seconds: float) -> None:
        """Delay every API response by this many seconds (a slow Kite)."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._delay = float(seconds)

    def set_html_errors(self, enabled: bool) -> None:
        """Answer every API call with 502 and an HTML proxy error page."""
        with self._lock:
            self._html_errors = bool(enabled)

    def set_approved_platform(self, approved: bool) -> None:
        """Issue refresh tokens on login (Kite does so for approved platforms only)."""
        with self._lock:
            self._approved_platform = bool(approved)

    @property
    def approved_platform(self) -> bool:
        with self._lock:
            return self._approved_platform

    def kill_access_tokens(self, access_token: str | None = None, user_id: str | None = None) -> int:
        """End this access token, or every live one of ``user_id`` (every live one when neither is
        given), as a login elsewhere would: calls with it get TokenException (403). Refresh tokens
        stay valid. Returns how many ended."""
        with self._lock:
            if access_token is not None:
                doomed = [access_token]
            else:
                doomed = [
                    token
                    for token, session in self._sessions_by_access.items()
                    if user_id is None or session.user_id == user_id
                ]
            return sum(1 for token in doomed if self._sessions_by_access.pop(token, None) is not None)

    def mint_session(self, user_id: str) -> dict[str, Any]:
        """A live session for ``user_id`` as ``POST /session/token`` answers it, without a browser
        login: for tests and scripts that need several users."""
        if not user_id.isalnum() or not 2 <= len(user_id) <= 16:
            raise ValueError("user_id must be a Kite client id such as CD5678")
        with self._lock:
            return self._new_session_locked(user_id)

    def set_login_user(self, user_id: str) -> None:
        """The user the browser login logs in as from now on."""
        if not user_id.isalnum() or not 2 <= len(user_id) <= 16:
            raise ValueError("login_user_id must be a Kite client id such as CD5678")
        with self._lock:
            self._login_user_id = user_id

    def set_login_outcome(self, status: str) -> None:
        """``"success"`` issues request tokens; anything else (e.g. ``"cancelled"``) redirects without one."""
        if not status:
            raise ValueError("login status must be non-empty")
        with self._lock:
            self._login_status = status

    # -- inspection ---------------------------------------------------------------------------

    def active_access_tokens(self) -> list[str]:
        with self._lock:
            return list(self._sessions_by_access)

    def active_refresh_tokens(self) -> list[str]:
        with self._lock:
            return list(self._sessions_by_refresh)

    def issued_request_tokens(self) -> list[str]:
        """Every request token issued so far, used or not, oldest first."""
        with self._lock:
            return list(self._issued_request_tokens)

    def pending_request_tokens(self) -> list[str]:
        """Request tokens issued and not yet consumed (expired ones included until tried)."""
        with self._lock:
            return list(self._pending_request_tokens)

    def api_requests(self) -> list[ApiRequest]:
        """API requests received so far, oldest first."""
        with self._lock:
            return list(self._api_requests)

    def clear_api_requests(self) -> None:
        with self._lock:
            self._api_requests.clear()

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot, as served by ``GET /__sim/state``; never contains the api_secret."""
        with self._lock:
            requests = [
                {
                    "method": r.method,
                    "path": r.path,
                    "query": self._scrub(r.query),
                    "form": self._scrub(r.form),
                }
                for r in self._api_requests
            ]
            return {
                "api_key": self.api_key,
                "user_id": self.user_id,
                "login_user_id": self._login_user_id,
                "user_name": self.user_name,
                "redirect_url": self.redirect_url,
                "request_token_ttl": self.request_token_ttl,
                "controls": self._controls_locked(),
                "counts": {
                    "issued_request_tokens": len(self._issued_request_tokens),
                    "pending_request_tokens": len(self._pending_request_tokens),
                    "active_access_tokens": len(self._sessions_by_access),
                    "active_refresh_tokens": len(self._sessions_by_refresh),
                    "api_requests": len(self._api_requests),
                },
                "issued_request_tokens": list(self._issued_request_tokens),
                "active_access_tokens": list(self._sessions_by_access),
                "active_refresh_tokens": list(self._sessions_by_refresh),
                "api_requests": requests,
            }

    def _scrub(self, values: Mapping[str, str]) -> dict[str, str]:
        # A client that wrongly sends the secret must not get it echoed back by the state endpoint.
        return {k: (_REDACTED if self._api_secret in v else v) for k, v in values.items()}

    def _controls_locked(self) -> dict[str, Any]:
        return {
            "delay_seconds": self._delay,
            "html_errors": self._html_errors,
            "login_status": self._login_status,
            "approved_platform": self._approved_platform,
        }

    def apply_controls(self, controls: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a ``/__sim/control`` body (any subset of the keys); returns the resulting controls."""
        unknown = set(controls) - {
            "delay_seconds",
            "html_errors",
            "login_status",
            "approved_platform",
            "login_user_id",
        }
        if unknown:
            raise ValueError(f"unknown control(s): {', '.join(sorted(unknown))}")
        delay = controls.get("delay_seconds")
        html_errors = controls.get("html_errors")
        login_status = controls.get("login_status")
        approved_platform = controls.get("approved_platform")
        # Validate everything before changing anything, so a bad body changes nothing.
        if "delay_seconds" in controls and (
            isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0
        ):
            raise ValueError("delay_seconds must be a number >= 0")
        if "html_errors" in controls and not isinstance(html_errors, bool):
            raise ValueError("html_errors must be true or false")
        if "login_status" in controls and (not isinstance(login_status, str) or not login_status):
            raise ValueError("login_status must be a non-empty string")
        if "approved_platform" in controls and not isinstance(approved_platform, bool):
            raise ValueError("approved_platform must be true or false")
        login_user_id = controls.get("login_user_id")
        if "login_user_id" in controls and not (
            isinstance(login_user_id, str) and login_user_id.isalnum() and 2 <= len(login_user_id) <= 16
        ):
            raise ValueError("login_user_id must be a Kite client id such as CD5678")
        with self._lock:
            if isinstance(delay, int | float):
                self._delay = float(delay)
            if isinstance(html_errors, bool):
                self._html_errors = html_errors
            if isinstance(login_status, str):
                self._login_status = login_status
            if isinstance(approved_platform, bool):
                self._approved_platform = approved_platform
            if isinstance(login_user_id, str):
                self._login_user_id = login_user_id
            return self._controls_locked()

    # -- protocol -----------------------------------------------------------------------------

    def _login_redirect(self, query: Mapping[str, str]) -> str:
        """Location for ``GET /connect/login``; raises _KiteError for a wrong api_key."""
        api_key = query.get("api_key", "")
        if not hmac.compare_digest(api_key.encode(), self.api_key.encode()):
            raise _KiteError("InputException", "Invalid `api_key`." if api_key else "Missing `api_key`.")
        with self._lock:
            status = self._login_status
            params = [("action", "login"), ("type", "login"), ("status", status)]
            if status == "success":
                token = _new_token()
                self._pending_request_tokens[token] = time.monotonic()
                self._request_token_users[token] = self._login_user_id
                self._issued_request_tokens.append(token)
                params.append(("request_token", token))
        # Kite hands redirect_params back on the redirect, after its own parameters.
        params += parse_qsl(query.get("redirect_params", ""), keep_blank_values=True)
        scheme, netloc, path, existing, fragment = urlsplit(self.redirect_url)
        merged = parse_qsl(existing, keep_blank_values=True) + params
        return urlunsplit((scheme, netloc, path, urlencode(merged), fragment))

    def _check_api_key(self, api_key: str) -> None:
        if not hmac.compare_digest(api_key.encode(), self.api_key.encode()):
            raise _KiteError("TokenException", "Invalid `api_key`.")

    def _check_checksum(self, api_key: str, token: str, checksum: str) -> None:
        expected = _sha256_hex(api_key, token, self._api_secret)
        if not hmac.compare_digest(checksum.lower().encode(), expected.encode()):
            raise _KiteError("TokenException", "Invalid `checksum`.")

    def _session_data(self, session: _Session) -> dict[str, Any]:
        return {
            **self._profile_data(session.user_id),
            "api_key": self.api_key,
            "access_token": session.access_token,
            "public_token": session.public_token,
            "enctoken": _new_token(),
            "refresh_token": session.refresh_token,
            "silo": "",
            "login_time": session.login_time,
        }

    def _profile_data(self, user_id: str | None = None) -> dict[str, Any]:
        user_id = user_id or self.user_id
        user_name = self.user_name if user_id == self.user_id else f"User {user_id}"
        return {
            "user_id": user_id,
            "user_type": "individual",
            "email": f"{user_id.lower()}@example.com",
            "user_name": user_name,
            "user_shortname": user_name.split(" ")[0],
            "broker": "ZERODHA",
            "exchanges": ["NSE", "NFO", "BFO", "CDS", "BSE", "MCX", "BCD", "MF"],
            "products": ["CNC", "NRML", "MIS", "BO", "CO"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
            "avatar_url": None,
            "meta": {"demat_consent": "physical"},
        }

    def _exchange(self, form: Mapping[str, str]) -> dict[str, Any]:
        api_key, request_token, checksum = _require(form, "api_key", "request_token", "checksum")
        self._check_api_key(api_key)
        self._check_checksum(api_key, request_token, checksum)
        with self._lock:
            # Consumed by the first attempt that passes the checksum, whatever happens next.
            issued_at = self._pending_request_tokens.pop(request_token, None)
            user_id = self._request_token_users.pop(request_token, self.user_id)
            if issued_at is None or time.monotonic() - issued_at > self.request_token_ttl:
                raise _KiteError("TokenException", _MSG_INVALID_OR_EXPIRED)
            return self._new_session_locked(user_id)

    def _new_session_locked(self, user_id: str) -> dict[str, Any]:
        session = _Session(
            user_id=user_id,
            access_token=_new_token(),
            public_token=_new_token(),
            refresh_token=_new_token() if self._approved_platform else "",
            login_time=_ist_now(),
        )
        self._sessions_by_access[session.access_token] = session
        if session.refresh_token:
            self._sessions_by_refresh[session.refresh_token] = session
        return self._session_data(session)

    def _renew(self, form: Mapping[str, str]) -> dict[str, Any]:
        api_key, refresh_token, checksum = _require(form, "api_key", "refresh_token", "checksum")
        self._check_api_key(api_key)
        self._check_checksum(api_key, refresh_token, checksum)
        with self._lock:
            session = self._sessions_by_refresh.get(refresh_token)
            if session is None:
                raise _KiteError("TokenException", _MSG_INVALID_OR_EXPIRED)
            # Renewal replaces the session's access token; the old one stops working.
            self._sessions_by_access.pop(session.access_token, None)
            session.access_token = _new_token()
            session.public_token = _new_token()
            session.login_time = _ist_now()
            self._sessions_by_access[session.access_token] = session
            # The official clients read access_token (and the Java one user_id/refresh_token).
            return {
                "user_id": session.user_id,
                "access_token": session.access_token,
                "public_token": session.public_token,
                "refresh_token": session.refresh_token,
                "login_time": session.login_time,
            }

    def _invalidate(self, query: Mapping[str, str]) -> bool:
        (api_key,) = _require(query, "api_key")
        access_token, refresh_token = query.get("access_token", ""), query.get("refresh_token", "")
        if not access_token and not refresh_token:
            raise _KiteError("InputException", "Missing `access_token` or `refresh_token`.")
        self._check_api_key(api_key)
        with self._lock:
            if access_token:
                if access_token not in self._sessions_by_access:
                    raise _KiteError("TokenException", _MSG_INVALID_OR_EXPIRED)
                del self._sessions_by_access[access_token]
            if refresh_token:
                if refresh_token not in self._sessions_by_refresh:
                    raise _KiteError("TokenException", _MSG_INVALID_OR_EXPIRED)
                del self._sessions_by_refresh[refresh_token]
        return True

    def _profile(self, authorization: str) -> dict[str, Any]:
        scheme, _, credentials = authorization.partition(" ")
        api_key, _, access_token = credentials.strip().partition(":")
        if scheme.lower() != "token" or not api_key or not access_token:
            raise _KiteError("TokenException", _MSG_BAD_AUTH)
        if not hmac.compare_digest(api_key.encode(), self.api_key.encode()):
            raise _KiteError("TokenException", _MSG_BAD_AUTH)
        with self._lock:
            session = self._sessions_by_access.get(access_token)
            if session is None:
                raise _KiteError("TokenException", _MSG_BAD_AUTH)
            user_id = session.user_id
        return self._profile_data(user_id)

    def _record(self, method: str, path: str, query: Mapping[str, str], form: Mapping[str, str]) -> None:
        request = ApiRequest(
            method=method, path=path, query=dict(query), form=dict(form), received_at=time.time()
        )
        with self._lock:
            self._api_requests.append(request)
            delay, html_errors = self._delay, self._html_errors
        # A delay cut short by stop() ends without an answer, as a Kite going away would.
        if delay > 0 and self._stopping.wait(delay):
            raise _NoAnswerError
        if html_errors:
            raise _HtmlError


class _HtmlError(Exception):
    """Raised to answer with the proxy error page instead of JSON."""


class _NoAnswerError(Exception):
    """Raised to close the connection without answering."""


# (method, path) -> handler name; the set of paths decides 404 versus 405.
_API_ROUTES = {
    ("POST", "/session/token"): "exchange",
    ("DELETE", "/session/token"): "invalidate",
    ("POST", "/session/refresh_token"): "renew",
    ("GET", "/user/profile"): "profile",
}
_API_PATHS = {path for _, path in _API_ROUTES}


_KNOWN_PATHS = _API_PATHS | {
    "/connect/login",
    "/__sim/control",
    "/__sim/state",
    "/__sim/kill",
    "/__sim/sessions",
}


def _loggable_path(path: str) -> str:
    # Unknown paths are whatever a client sent, possibly a token: only known routes are logged.
    return path if path in _KNOWN_PATHS else "(other path)"


def _make_handler(sim: KiteSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        simulator = sim

    return Handler


class _Handler(BaseHTTPRequestHandler):
    simulator: KiteSimulator
    server_version = "kite-simulator"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    # -- plumbing -----------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        # The default log line carries the raw request line, query string and all, where tokens
        # and checksums travel; log_request below logs method and path only.
        return

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.simulator.log_requests:
            status = code.value if isinstance(code, HTTPStatus) else code
            log.info("%s %s %s", self.command, _loggable_path(urlsplit(self.path).path), status)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        self._send(status, body, "application/json")

    def _send_success(self, data: Any) -> None:
        self._send_json(HTTPStatus.OK, {"status": "success", "data": data})

    def _send_error(self, err: _KiteError) -> None:
        self._send_json(
            err.status,
            {"status": "error", "message": err.message, "data": None, "error_type": err.error_type},
        )

    def _send_html(self, status: int, title: str, message: str) -> None:
        page = (
            f"<!doctype html><html><head><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
        )
        self._send(status, page.encode("utf-8"), "text/html; charset=utf-8")

    def _read_body(self) -> bytes:
        length_header = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(length_header)
        except ValueError as exc:
            raise _KiteError("InputException", "Invalid Content-Length.") from exc
        if length < 0 or length > _MAX_BODY_BYTES:
            raise _KiteError("InputException", "Request body too large.")
        return self.rfile.read(length) if length else b""

    def _read_form(self) -> dict[str, str]:
        body = self._read_body()
        content_type = self.headers.get("Content-Type", "")
        if not body or "application/x-www-form-urlencoded" not in content_type:
            return {}
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError as exc:
            raise _KiteError("InputException", "Request body is not valid UTF-8.") from exc

    # -- dispatch -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            self._route()
        except (ConnectionError, _NoAnswerError):
            # The client went away (e.g. it timed out on a simulated delay) or we are stopping:
            # there is nobody to answer, and a traceback on stderr would only be noise.
            self.close_connection = True

    def _route(self) -> None:
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            if path == "/connect/login":
                self._handle_login(query)
            elif path.startswith("/__sim/"):
                self._handle_sim(path)
            else:
                self._handle_api(path, query)
        except _KiteError as err:
            self._send_error(err)
        except OrderApiError as err:
            self._send_error(_KiteError(err.error_type, err.message, HTTPStatus(err.status)))
        except (ConnectionError, _NoAnswerError):
            raise
        except Exception:
            # Answer in Kite's envelope rather than with http.server's HTML traceback page.
            log.exception("unhandled error on %s %s", self.command, _loggable_path(path))
            self._send_error(_KiteError("GeneralException", "Internal error."))

    def _handle_login(self, query: Mapping[str, str]) -> None:
        if self.command != "GET":
            raise _KiteError("InputException", "Method not allowed.", HTTPStatus.METHOD_NOT_ALLOWED)
        try:
            location = self.simulator._login_redirect(query)
        except _KiteError as err:
            # Kite shows an HTML error page here: the browser, not an API client, is the reader.
            self._send_html(HTTPStatus.BAD_REQUEST, "Invalid request", f"{err.message} Check the login URL.")
            return
        self._send(HTTPStatus.FOUND, b"", "text/html; charset=utf-8", {"Location": location})

    def _handle_sim(self, path: str) -> None:
        if path == "/__sim/state" and self.command == "GET":
            self._send_success(self.simulator.state())
            return
        if path == "/__sim/control" and self.command == "POST":
            body = self._read_body()
            try:
                controls = json.loads(body or b"{}")
                if not isinstance(controls, dict):
                    raise ValueError("body must be a JSON object")
                applied = self.simulator.apply_controls(controls)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise _KiteError("InputException", f"Invalid control body: {exc}") from exc
            self._send_success(applied)
            return
        if path == "/__sim/kill" and self.command == "POST":
            try:
                body = json.loads(self._read_body() or b"{}")
            except ValueError as exc:
                raise _KiteError("InputException", f"Invalid kill body: {exc}") from exc
            token = body.get("access_token") if isinstance(body, dict) else None
            user = body.get("user_id") if isinstance(body, dict) else None
            if not isinstance(body, dict) or not all(
                value is None or (isinstance(value, str) and value) for value in (token, user)
            ):
                raise _KiteError(
                    "InputException", 'Invalid kill body: {"access_token": "..."}, {"user_id": "..."} or {}'
                )
            self._send_success({"killed": self.simulator.kill_access_tokens(token, user)})
            return
        if path == "/__sim/sessions" and self.command == "POST":
            try:
                body = json.loads(self._read_body() or b"{}")
                user = body.get("user_id") if isinstance(body, dict) else None
                if not isinstance(user, str):
                    raise ValueError('{"user_id": "CD5678"} is expected')
                self._send_success(self.simulator.mint_session(user))
            except ValueError as exc:
                raise _KiteError("InputException", f"Invalid session body: {exc}") from exc
            return
        if path == "/__sim/orders" or path.startswith("/__sim/orders/"):
            self._send_success(self.simulator.orders.handle_control(self.command, path, self._read_body()))
            return
        raise _KiteError("GeneralException", "Route not found.", HTTPStatus.NOT_FOUND)

    def _handle_api(self, path: str, query: dict[str, str]) -> None:
        sim = self.simulator
        form = self._read_form() if self.command in {"POST", "PUT"} else {}
        if path not in _API_PATHS and not is_order_path(path):
            raise _KiteError("GeneralException", "Route not found.", HTTPStatus.NOT_FOUND)
        try:
            sim._record(self.command, path, query, form)
        except _HtmlError:
            self._send(HTTPStatus.BAD_GATEWAY, _PROXY_ERROR_PAGE.encode(), "text/html")
            return
        route = _API_ROUTES.get((self.command, path))
        if route is None and not is_order_path(path):
            raise _KiteError("GeneralException", "Method not allowed.", HTTPStatus.METHOD_NOT_ALLOWED)
        if self.headers.get("X-Kite-Version", "").strip() != "3":
            raise _KiteError("InputException", "Missing or invalid `X-Kite-Version` header (expected 3).")
        data: Any
        authorization = self.headers.get("Authorization", "")
        if route is None:
            data = sim.orders.handle_api(self.command, path, query, form, lambda: sim._profile(authorization))
        elif route == "exchange":
            data = sim._exchange(form)
        elif route == "renew":
            data = sim._renew(form)
        elif route == "invalidate":
            data = sim._invalidate(query)
        else:
            data = sim._profile(authorization)
        self._send_success(data)


# -- CLI ----------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local.kite_simulator",
        description=(
            "Kite Connect simulator for local development. Reads KITE_API_KEY (default "
            f"{DEFAULT_API_KEY}), KITE_API_SECRET (default {DEFAULT_API_SECRET}) and KITE_SIM_USER_ID "
            f"(default {DEFAULT_USER_ID}) from the environment."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)"
    )
    parser.add_argument(
        "--redirect-url",
        default=DEFAULT_REDIRECT_URL,
        help=f"the app's redirect URL (default {DEFAULT_REDIRECT_URL})",
    )
    parser.add_argument(
        "--request-token-ttl",
        type=float,
        default=120.0,
        help="request token lifetime in seconds (default 120)",
    )
    parser.add_argument(
        "--approved-platform",
        action="store_true",
        help="issue refresh tokens, as Kite does for approved platforms only (default: off, like most apps)",
    )
    parser.add_argument(
        "--postback-url", help="where order postbacks go (default: none, postbacks are not sent)"
    )
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT. Returns 2 if the port cannot be used."""
    args = _parse_args(argv)
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s kite-sim %(message)s", stream=sys.stderr)
    sim = KiteSimulator(
        api_key=os.environ.get("KITE_API_KEY") or DEFAULT_API_KEY,
        api_secret=os.environ.get("KITE_API_SECRET") or DEFAULT_API_SECRET,
        redirect_url=args.redirect_url,
        user_id=os.environ.get("KITE_SIM_USER_ID") or DEFAULT_USER_ID,
        host=args.host,
        port=args.port,
        request_token_ttl=args.request_token_ttl,
        approved_platform=args.approved_platform,
        postback_url=args.postback_url,
        log_requests=not args.quiet,
    )
    try:
        sim.start()
    except SimulatorStartError as exc:
        print(f"kite simulator: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Signal handlers can only be installed from the main thread; elsewhere the caller stops us.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous: dict[signal.Signals, Any] = {}
    if in_main_thread:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        print(f"Kite simulator on {sim.url} (api_key {sim.api_key}, user {sim.user_id})", flush=True)
        print(f"  login page: {sim.url}/connect/login?v=3&api_key={sim.api_key}", flush=True)
        # A timed wait keeps the main thread responsive to signals.
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("Kite simulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
