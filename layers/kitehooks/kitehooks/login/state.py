"""The ``state`` that ties Kite's redirect back to the browser that started the login.

``/login`` makes a random nonce, adds it to an HttpOnly cookie and puts it, signed, in ``state``;
Kite carries ``state`` back through ``redirect_params``. ``/callback`` accepts the redirect only
when the signature holds, the state is fresh, the cookie holds the same nonce, and the nonce has
not been used before (a conditional write to a DynamoDB table with TTL makes it single-use).

The cookie holds the nonces of the last few logins started in this browser, so a login in a
second tab does not break the first. After a login completes, a second cookie holds a signed
"completed" marker for its nonce, so a reload or Back of the greeting page says the login is done
instead of refusing a used state (and never repeats the exchange).

Signed with HMAC-SHA256 under a key derived from the api_secret, so no extra secret is needed;
hand-written because it is a dozen lines of ``hmac`` and no library here does exactly this.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from urllib.parse import quote

# The login cookie's name over plain HTTP (the local stack); over HTTPS it carries the __Host-
# prefix (kitehooks.login.start.state_cookie_name).
STATE_COOKIE = "kitehooks_login"
# The completed-login markers' cookie, named the same way (kitehooks.login.start.completed_cookie_name).
COMPLETED_COOKIE = "kitehooks_done"
_KEY_CONTEXT = b"kitehooks/login-state/v1"
_COMPLETED_CONTEXT = b"kitehooks/login-completed/v1"
_NONCE = re.compile(r"[A-Za-z0-9_-]{22,64}")
# Logins of one browser that may be under way at once (tabs); an older one beyond this is dropped.
MAX_PENDING_LOGINS = 4
MAX_COMPLETED_LOGINS = 4
# How long a reload of the greeting page says "already completed": about a login's own lifetime.
COMPLETED_SECONDS = 15 * 60
_SEPARATOR = "."  # between the nonces in the cookie: never part of a nonce (base64url)
_COMPLETED_ENTRY = re.compile(r"([A-Za-z0-9]{0,16})~([0-9]{1,12})~([A-Za-z0-9_-]{22})")
_USER_ID = re.compile(r"[A-Za-z0-9]{1,16}")
# /callback refuses a longer state unread; /login never issues one (kitehooks.login.start).
MAX_STATE_LENGTH = 2048
MAX_RETURN_PATH_LENGTH = 512
# Characters a path keeps as they are: printable ASCII. Anything else is percent-encoded as UTF-8.
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


class StateRejected(Exception):
    """The state is missing, forged, expired, replayed or not this browser's. Safe to show."""


class UnsafeReturnPath(ValueError):
    """A ``next`` that is not a path on this site."""


@dataclass(frozen=True, slots=True)
class LoginState:
    nonce: str
    expires_at: int
    next_path: str | None


def _key(api_secret: str) -> bytes:
    return hmac.new(api_secret.encode("utf-8"), _KEY_CONTEXT, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_return_path(next_path: str | None) -> str | None:
    """Accept only a same-origin path ("/orders"), never "//host", "/\\host" or a URL.

    Returns the path with every character beyond printable ASCII percent-encoded as UTF-8, as a
    browser sends it: it then fits an HTTP Location header and its length is what the state
    carries. Longer than MAX_RETURN_PATH_LENGTH once encoded is refused.
    """
    if next_path is None or next_path == "":
        return None
    too_long = UnsafeReturnPath(
        f"next is too long: at most {MAX_RETURN_PATH_LENGTH} characters once URL-encoded "
        "(a non-ASCII character takes 6 to 12)"
    )
    if len(next_path) > MAX_RETURN_PATH_LENGTH:
        raise too_long
    if (
        not next_path.startswith("/")
        or next_path.startswith(("//", "/\\"))
        or any(ch in next_path for ch in "\\\r\n\t")
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in next_path)
    ):
        raise UnsafeReturnPath("next must be a path on this site, such as /orders")
    try:
        encoded = quote(next_path, safe=_PATH_SAFE, errors="strict")
    except UnicodeEncodeError:  # a lone surrogate: no URL can carry it
        raise UnsafeReturnPath("next must be a path on this site, such as /orders") from None
    if len(encoded) > MAX_RETURN_PATH_LENGTH:
        raise too_long
    return encoded


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def sign_state(api_secret: str, nonce: str, expires_at: int, next_path: str | None) -> str:
    payload = _b64(json.dumps({"n": nonce, "e": expires_at, "x": next_path}, separators=(",", ":")).encode())
    signature = _b64(hmac.new(_key(api_secret), payload.encode("ascii"), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def read_state(api_secret: str, state: str | None) -> LoginState:
    """The state's claims, once its signature holds; expiry and the browser are checked apart."""
    if not state:
        raise StateRejected("the login state is missing: start again from /login")
    if len(state) > MAX_STATE_LENGTH or state.count(".") != 1:
        raise StateRejected("the login state is malformed: start again from /login")
    payload, signature = state.split(".")
    expected = _b64(hmac.new(_key(api_secret), payload.encode("ascii", "replace"), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace")):
        raise StateRejected("the login state is not one we issued: start again from /login")
    try:
        claims = json.loads(_unb64(payload))
        return LoginState(nonce=str(claims["n"]), expires_at=int(claims["e"]), next_path=claims["x"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise StateRejected("the login state is malformed: start again from /login") from None


def check_fresh(checked: LoginState, now: float) -> None:
    if now >= checked.expires_at:
        raise StateRejected(
            "this login page has expired (a login must be completed within minutes). If you "
            "completed it earlier, that login stands; otherwise start again from /login"
        )


def check_browser(checked: LoginState, login_cookie: str | None) -> None:
    """The login cookie (this browser's pending logins) must hold the state's nonce."""
    pending = pending_nonces(login_cookie)
    if not pending:
        raise StateRejected(
            "this browser did not start the login (no login cookie): start again from /login in this browser"
        )
    if not any(
        hmac.compare_digest(nonce.encode("ascii"), checked.nonce.encode("ascii", "replace"))
        for nonce in pending
    ):
        raise StateRejected("the login was started in another browser: start again from /login")


def verify_state(api_secret: str, state: str | None, login_cookie: str | None, now: float) -> LoginState:
    """Check signature, expiry and the browser binding; single use is the caller's next step.
    ``login_cookie`` is the login cookie's value: one nonce, or the nonces of a few logins."""
    checked = read_state(api_secret, state)
    check_fresh(checked, now)
    check_browser(checked, login_cookie)
    return checked


def pending_nonces(login_cookie: str | None) -> list[str]:
    """The well-formed nonces in the login cookie, oldest first; anything else in it is ignored."""
    found: list[str] = []
    for part in (login_cookie or "").split(_SEPARATOR):
        if _NONCE.fullmatch(part) and part not in found:
            found.append(part)
    return found[-MAX_PENDING_LOGINS:]


def with_pending(login_cookie: str | None, nonce: str) -> str:
    """The login cookie's value with ``nonce`` added: the newest few logins, so tabs coexist."""
    kept = [other for other in pending_nonces(login_cookie) if other != nonce]
    return _SEPARATOR.join([*kept, nonce][-MAX_PENDING_LOGINS:])


def without_pending(login_cookie: str | None, nonce: str) -> str:
    """The login cookie's value once ``nonce`` is used: the other tabs' logins stay."""
    return _SEPARATOR.join(other for other in pending_nonces(login_cookie) if other != nonce)


def _completed_mac(api_secret: str, nonce: str, user_id: str, until: int) -> str:
    key = hmac.new(api_secret.encode("utf-8"), _COMPLETED_CONTEXT, hashlib.sha256).digest()
    message = f"{nonce}\n{user_id}\n{until}".encode("ascii", "replace")
    return _b64(hmac.new(key, message, hashlib.sha256).digest())[:22]  # 132 bits


def completed_entry(api_secret: str, nonce: str, user_id: str, until: int) -> str:
    """A signed marker that the login of ``nonce`` completed, as ``user_id``, valid until ``until``."""
    shown = user_id if _USER_ID.fullmatch(user_id) else ""
    return f"{shown}~{until}~{_completed_mac(api_secret, nonce, shown, until)}"


def _completed_entries(completed_cookie: str | None, now: float) -> list[tuple[str, int, str]]:
    entries: list[tuple[str, int, str]] = []
    for part in (completed_cookie or "").split(_SEPARATOR):
        found = _COMPLETED_ENTRY.fullmatch(part)
        if found and int(found.group(2)) > now:
            entries.append((found.group(1), int(found.group(2)), found.group(3)))
    return entries[-MAX_COMPLETED_LOGINS:]


def with_completed(completed_cookie: str | None, entry: str, now: float) -> str:
    """The completed cookie's value with ``entry`` added; expired and malformed entries dropped."""
    kept = [f"{user}~{until}~{mac}" for user, until, mac in _completed_entries(completed_cookie, now)]
    return _SEPARATOR.join([*kept, entry][-MAX_COMPLETED_LOGINS:])


def completed_as(api_secret: str, completed_cookie: str | None, nonce: str, now: float) -> str | None:
    """The user_id ("" if not shown) of this browser's completed login of ``nonce``, or None."""
    for user_id, until, mac in _completed_entries(completed_cookie, now):
        expected = _completed_mac(api_secret, nonce, user_id, until)
        if hmac.compare_digest(expected.encode("ascii"), mac.encode("ascii")):
            return user_id
    return None


def nonce_key(nonce: str) -> str:
    """What the used-states table stores: a hash, so the table holds nothing replayable."""
    return hashlib.sha256(nonce.encode("ascii")).hexdigest()
