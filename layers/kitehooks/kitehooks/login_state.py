"""The ``state`` that ties Kite's redirect back to the browser that started the login.

``/login`` makes a random nonce, puts it in an HttpOnly cookie and, signed, in ``state``; Kite
carries ``state`` back through ``redirect_params``. ``/callback`` accepts the redirect only when
the signature holds, the state is fresh, the cookie holds the same nonce, and the nonce has not
been used before (a conditional write to a DynamoDB table with TTL makes it single-use).

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
# prefix (kitehooks.login.state_cookie_name).
STATE_COOKIE = "kitehooks_login"
_KEY_CONTEXT = b"kitehooks/login-state/v1"
_NONCE = re.compile(r"[A-Za-z0-9_-]{22,64}")
# /callback refuses a longer state unread; /login never issues one (kitehooks.login).
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


def verify_state(api_secret: str, state: str | None, cookie_nonce: str | None, now: float) -> LoginState:
    """Check signature, expiry and the browser binding; single use is the caller's next step."""
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
        login_state = LoginState(nonce=str(claims["n"]), expires_at=int(claims["e"]), next_path=claims["x"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise StateRejected("the login state is malformed: start again from /login") from None
    if now >= login_state.expires_at:
        raise StateRejected("the login took too long and its state has expired: start again from /login")
    if not cookie_nonce or not _NONCE.fullmatch(cookie_nonce):
        raise StateRejected(
            "this browser did not start the login (no login cookie): start again from /login in this browser"
        )
    if not hmac.compare_digest(cookie_nonce.encode("ascii"), login_state.nonce.encode("ascii", "replace")):
        raise StateRejected("the login was started in another browser: start again from /login")
    return login_state


def nonce_key(nonce: str) -> str:
    """What the used-states table stores: a hash, so the table holds nothing replayable."""
    return hashlib.sha256(nonce.encode("ascii")).hexdigest()
