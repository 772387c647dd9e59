"""Kite's SHA-256 checksums, computed over the strings exactly as received.

Kite signs with a plain SHA-256 of concatenated strings (not an HMAC), so this is written by
hand: no library implements Kite's scheme. Comparison is constant time.
"""

from __future__ import annotations

import hashlib
import hmac


def sha256_hex(*parts: str) -> str:
    """Lower-case hex SHA-256 of the UTF-8 concatenation of ``parts``."""
    return hashlib.sha256("".join(parts).encode("utf-8")).hexdigest()


def postback_checksum(order_id: str, order_timestamp: str, api_secret: str) -> str:
    """``sha256(order_id + order_timestamp + api_secret)``: what Kite puts in a postback."""
    return sha256_hex(order_id, order_timestamp, api_secret)


def session_checksum(api_key: str, token: str, api_secret: str) -> str:
    """``sha256(api_key + request_token|refresh_token + api_secret)``: what Kite expects on login/renew."""
    return sha256_hex(api_key, token, api_secret)


def checksums_match(expected: str, received: str) -> bool:
    """Constant-time comparison; hex digits compared case-insensitively, nothing else normalised."""
    return hmac.compare_digest(expected.lower().encode("ascii"), received.lower().encode("utf-8"))
