"""Kite order postbacks: parsing the raw body and verifying its checksum.

The types make the order of operations impossible to get wrong: :func:`parse_postback` gives a
:class:`SignedPostback` (well-formed, not yet trusted) and only :func:`verify_postback` turns it
into a :class:`VerifiedPostback`, the one type the queue accepts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from kitehooks.kite.checksum import checksums_match, postback_checksum
from kitehooks.orders.states import OrderState, order_state, quantity

# Checked with str.strip over these characters rather than regular expressions: the same rule,
# and compiling the two expressions cost ~7 ms of every cold start.
_HEX_DIGITS = "0123456789abcdefABCDEF"
_CHECKSUM_LENGTH = 64
# Kite's order ids are short numeric strings ("220303000308932"). This admits a little more, and
# nothing SQS would refuse as a MessageGroupId: a signed postback with any other order_id could
# never be queued, and junk with one is refused before anything is stored or logged.
_ORDER_ID_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
_ORDER_ID_MAX_LENGTH = 64
# What SQS refuses in a message body and attribute values: everything outside the XML character
# set (#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]). Written as the
# characters refused rather than as the negated set accepted: the same characters, and it compiles
# in well under a millisecond where the negated set took ~7 ms of every cold start.
_NOT_FOR_SQS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_REQUIRED_FIELDS = ("order_id", "order_timestamp", "checksum")
_OPTIONAL_TEXT_FIELDS = ("user_id", "status")


class PostbackRejected(Exception):
    """The request is not a postback we can accept. ``reason`` is safe to show the caller."""

    def __init__(self, status_code: int, reason: str, code: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason
        self.code = code  # short, stable: used as a metric dimension


def _reject(status_code: int, reason: str, code: str) -> NoReturn:
    raise PostbackRejected(status_code, reason, code)


@dataclass(frozen=True, slots=True)
class SignedPostback:
    """A well-formed postback whose checksum has not been checked yet."""

    raw_body: str
    order_id: str
    order_timestamp: str
    checksum: str
    user_id: str | None
    status: str | None
    # None when the body carries no readable quantity: then it names no order state.
    filled_quantity: int | None = None


@dataclass(frozen=True, slots=True)
class VerifiedPostback:
    """A postback whose checksum matched the app's api_secret: a genuine order update from Kite."""

    raw_body: str
    order_id: str
    order_timestamp: str
    user_id: str | None
    status: str | None
    filled_quantity: int | None = None

    @property
    def state(self) -> OrderState | None:
        """The order state this update claims (``UPDATE`` read as ``OPEN``), if it names one."""
        return order_state(self.order_id, self.status, self.filled_quantity)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A body with a key twice could be read one way here and another way by a consumer's parser;
    # refusing it keeps what was verified and what is delivered the same thing.
    result = dict(pairs)  # built in C; only a body with a duplicate is looked at key by key
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = key if len(key) <= 40 else key[:40] + "…"
                _reject(400, f"duplicate key {shown!r} in JSON body", "duplicate_key")
            seen.add(key)
    return result


def _no_constants(name: str) -> NoReturn:
    _reject(400, f"JSON body contains {name}, which is not valid JSON", "malformed_json")


class _JsonNumber(str):
    """A JSON number kept as its text, so that it is never mistaken for a JSON string."""


def _json_type(value: Any) -> str:
    if isinstance(value, _JsonNumber):
        return "number"
    return {dict: "object", list: "array", bool: "boolean", str: "string"}.get(type(value), "null")


def _check_text(field: str, value: str) -> None:
    # "\ud800" is valid JSON but not a character: it cannot be hashed, logged or sent to SQS.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _reject(400, f"{field} contains an unpaired surrogate escape", f"invalid_{field}")
    # The field becomes an SQS message attribute: a character SQS refuses would keep even a
    # genuine update out of the queue for ever (parked, then refused at every redrive).
    if _NOT_FOR_SQS.search(value):
        _reject(400, f"{field} contains a character SQS cannot carry", f"invalid_{field}")


def parse_postback(body: bytes, max_bytes: int) -> SignedPostback:
    """Check that ``body`` is a Kite postback in shape; raise :class:`PostbackRejected` if not."""
    if len(body) > max_bytes:
        _reject(413, f"body is {len(body)} bytes; the limit is {max_bytes}", "too_large")
    if not body.strip():
        _reject(400, "body is empty; expected the order as a JSON object", "empty_body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        _reject(400, f"body is not valid UTF-8 (byte {error.start})", "invalid_utf8")
    try:
        # Numbers stay text: only the raw body is delivered, and a 5,000-digit integer must
        # neither cost int() parsing nor raise Python's digit limit.
        document = json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constants,
            parse_int=_JsonNumber,
            parse_float=_JsonNumber,
        )
    except json.JSONDecodeError as error:
        _reject(
            400,
            f"body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
            "malformed_json",
        )
    except RecursionError:
        _reject(400, "body is nested too deeply", "malformed_json")
    if _NOT_FOR_SQS.search(text):
        _reject(400, "body contains a character SQS cannot carry (such as U+FFFF)", "invalid_character")
    if not isinstance(document, dict):
        _reject(400, f"body must be a JSON object, got {_json_type(document)}", "not_an_object")

    for field in _REQUIRED_FIELDS:
        value = document.get(field)
        if value is None or value == "":
            _reject(400, f"missing or empty {field}", f"missing_{field}")
        if not isinstance(value, str) or isinstance(value, _JsonNumber):
            _reject(400, f"{field} must be a string, got {_json_type(value)}", f"invalid_{field}")
        _check_text(field, value)
    order_id: str = document["order_id"]
    if len(order_id) > _ORDER_ID_MAX_LENGTH or order_id.strip(_ORDER_ID_CHARACTERS):
        _reject(
            400,
            "order_id must be a Kite order id: 1 to 64 letters, digits or . _ : -",
            "invalid_order_id",
        )
    checksum: str = document["checksum"]
    if len(checksum) != _CHECKSUM_LENGTH or checksum.strip(_HEX_DIGITS):
        _reject(400, "checksum must be 64 hexadecimal characters", "invalid_checksum")

    optional: dict[str, str | None] = {}
    for field in _OPTIONAL_TEXT_FIELDS:
        value = document.get(field)
        if value is not None and (not isinstance(value, str) or isinstance(value, _JsonNumber)):
            _reject(400, f"{field} must be a string, got {_json_type(value)}", f"invalid_{field}")
        if value:
            _check_text(field, value)
        optional[field] = value or None

    return SignedPostback(
        raw_body=text,
        order_id=document["order_id"],
        order_timestamp=document["order_timestamp"],
        checksum=checksum,
        user_id=optional["user_id"],
        status=optional["status"],
        filled_quantity=quantity(document.get("filled_quantity")),
    )


def verify_postback(postback: SignedPostback, api_secret: str) -> VerifiedPostback:
    """Return the postback as verified if its checksum matches; raise :class:`PostbackRejected` if not."""
    expected = postback_checksum(postback.order_id, postback.order_timestamp, api_secret)
    if not checksums_match(expected, postback.checksum):
        _reject(403, "checksum does not match order_id + order_timestamp + api_secret", "checksum_mismatch")
    return VerifiedPostback(
        raw_body=postback.raw_body,
        order_id=postback.order_id,
        order_timestamp=postback.order_timestamp,
        user_id=postback.user_id,
        status=postback.status,
        filled_quantity=postback.filled_quantity,
    )
