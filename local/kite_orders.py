"""Kite's order book for the simulator: orders placed over the API or by test controls, moved
through Kite's states, each state change posted to the app's postback URL as Kite posts it.

The simulator (:mod:`local.kite_simulator`) mounts :meth:`OrderBook.handle_api` for
``GET /orders``, ``GET /orders/{order_id}``, ``POST /orders/{variety}``,
``PUT|DELETE /orders/{variety}/{order_id}`` and :meth:`OrderBook.handle_control` for
``/__sim/orders/...``. What Kite does and this book reproduces:

- Placement passes through ``PUT ORDER REQ RECEIVED``, ``VALIDATION PENDING``, ``OPEN PENDING``
  to ``OPEN`` (or ``REJECTED`` by the risk checks); a modification through ``MODIFY VALIDATION
  PENDING`` and ``MODIFY PENDING`` back to ``OPEN``; a cancellation through ``CANCEL PENDING`` to
  ``CANCELLED``. ``GET /orders/{order_id}`` returns every one of them, oldest first.
- A partial fill or a modification is ``OPEN`` with the new ``filled_quantity`` in the book and
  ``UPDATE`` in the postback. Postbacks go out for ``OPEN``, ``UPDATE``, ``COMPLETE``,
  ``CANCELLED`` and ``REJECTED``, once each, never retried: raw JSON, ``Content-Type:
  application/json``, ``checksum = sha256(order_id + order_timestamp + api_secret)``.
- Each state carries its own ``order_timestamp`` (IST, ``YYYY-MM-DD HH:MM:SS``), never earlier
  than the order's previous one.

Switches (:meth:`OrderBook.configure`, or ``POST /__sim/orders/switches``): ``postback_url``,
``drop_share`` (0..1, the share of postbacks never sent, decided by a ``seed``ed generator),
``duplicate_next`` (the next N postbacks are sent twice), ``rate_limit`` (requests per second per
api_key on the order routes; beyond it Kite's 429; ``null`` = off), ``postback_content_type``
(``application/json``, or ``application/x-www-form-urlencoded`` over the same raw JSON body, as
Kite sometimes labels it). :meth:`OrderBook.forge` sends a forged postback: a genuine one with
status or quantities altered, whose checksum still verifies because Kite signs only order_id and
order_timestamp.

Postbacks are posted synchronously, before the call that moved the order returns: a test sees
them as soon as its control call is answered. Each user (``placed_by``) sees only their orders.

``python -m local.kite_orders`` (``make orders``) scripts a trading day at a running simulator:
``make dev``'s, found through ``.kitehooks-dev.json``, or ``--kite-url``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any

__all__ = [
    "FINAL_STATUSES",
    "POSTBACK_STATUSES",
    "OrderApiError",
    "OrderBook",
    "PostbackDelivery",
    "SteppingClock",
    "TradingDay",
    "is_order_path",
    "main",
    "trading_day",
]

IST = timezone(timedelta(hours=5, minutes=30), "IST")
_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"

FINAL_STATUSES = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})
# Statuses a postback can carry; the book says OPEN where the postback says UPDATE.
POSTBACK_STATUSES = frozenset({"OPEN", "UPDATE", *FINAL_STATUSES})

_VARIETIES = frozenset({"regular", "amo", "co", "iceberg", "auction"})
_ORDER_TYPES = frozenset({"MARKET", "LIMIT", "SL", "SL-M"})
_PRODUCTS = frozenset({"CNC", "NRML", "MIS", "MTF", "CO", "BO"})
_VALIDITIES = frozenset({"DAY", "IOC", "TTL"})
_EXCHANGES = frozenset({"NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX"})
_MAX_TAG_LENGTH = 20
_POSTBACK_TIMEOUT_SECONDS = 10.0
_MAX_CONTROL_BODY_BYTES = 64 * 1024
_JSON = "application/json"
# Kite has been seen labelling the same raw JSON body as a form; the switch reproduces that.
_FORM = "application/x-www-form-urlencoded"
_MSG_NOT_FOUND = "Couldn't find that `order_id`."
_MSG_PROCESSED = "Order cannot be {action} as it is being processed or has been completed."


class OrderApiError(Exception):
    """An error answered in Kite's error envelope (``error_type``, ``message``, HTTP status)."""

    def __init__(self, error_type: str, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


def _input_error(message: str) -> OrderApiError:
    return OrderApiError("InputException", message, HTTPStatus.BAD_REQUEST)


def is_order_path(path: str) -> bool:
    """``/orders``, ``/orders/{x}`` or ``/orders/{variety}/{order_id}``: the order routes."""
    parts = path.strip("/").split("/")
    return parts[0] == "orders" and 1 <= len(parts) <= 3 and all(parts)


class SteppingClock:
    """A clock for scripted days: each reading is ``step`` seconds after the previous one, so a
    seeded script yields the same timestamps (and checksums) on every run."""

    def __init__(self, start: datetime, step_seconds: float = 1.0) -> None:
        self._next = start
        self._step = timedelta(seconds=step_seconds)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            now, self._next = self._next, self._next + self._step
            return now


def _ist_now() -> datetime:
    return datetime.now(IST)


@dataclass(frozen=True)
class PostbackDelivery:
    """One postback as the book sent it, or would have: ``kind`` is ``genuine``, ``duplicate`` or
    ``forged``; ``outcome`` is ``delivered`` (2xx), ``failed`` (an error or non-2xx; Kite does not
    retry), ``dropped`` (the drop switch) or ``no_url`` (no postback URL configured)."""

    order_id: str
    status: str
    filled_quantity: int
    order_timestamp: str
    kind: str
    outcome: str
    http_status: int | None
    body: bytes = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready and without the body, which carries the checksum."""
        return {
            "order_id": self.order_id,
            "status": self.status,
            "filled_quantity": self.filled_quantity,
            "order_timestamp": self.order_timestamp,
            "kind": self.kind,
            "outcome": self.outcome,
            "http_status": self.http_status,
        }


@dataclass
class _Order:
    current: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    # The body of the latest genuine postback: what a forger who saw it would start from.
    last_postback: dict[str, Any] | None = None


@dataclass
class _Postback:
    payload: dict[str, Any]
    kind: str


def _positive_int(form: Mapping[str, str], name: str) -> int:
    try:
        value = int(form[name])
    except (KeyError, ValueError):
        raise _input_error(f"Invalid `{name}`.") from None
    if value <= 0:
        raise _input_error(f"Invalid `{name}`.")
    return value


def _number(form: Mapping[str, str], name: str, default: float = 0.0) -> float:
    raw = form.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _input_error(f"Invalid `{name}`.") from None
    if value < 0 or not math.isfinite(value):
        raise _input_error(f"Invalid `{name}`.")
    return value


class OrderBook:
    """The day's orders of the simulator's one user, with the postback switches."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        user_id: str,
        postback_url: str | None = None,
        app_id: int = 1234,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.api_key = api_key
        self._api_secret = api_secret
        self.user_id = user_id
        self.app_id = app_id
        self._clock: Callable[[], datetime] = clock or _ist_now
        # The state lock guards the book; the delivery lock keeps each change and its postbacks
        # together so an order's postbacks leave in the order its states were reached. The state
        # lock is never held while posting, so a receiver may read the book meanwhile.
        self._lock = threading.Lock()
        self._delivery_lock = threading.RLock()
        self._orders: dict[str, _Order] = {}
        self._sequence = 0
        self._deliveries: list[PostbackDelivery] = []
        self._request_times: deque[float] = deque()
        self._postback_url = postback_url
        self._drop_share = 0.0
        self._seed: int | None = None
        self._drop_random = random.Random()  # noqa: S311 - test data, seeded on purpose
        self._duplicate_next = 0
        self._rate_limit: int | None = None
        self._content_type = _JSON

    def __repr__(self) -> str:
        return f"OrderBook(user_id={self.user_id!r}, orders={len(self._orders)})"

    # -- switches -------------------------------------------------------------------------------

    _SWITCHES = frozenset(
        {"postback_url", "drop_share", "seed", "duplicate_next", "rate_limit", "postback_content_type"}
    )

    def configure(self, **switches: Any) -> dict[str, Any]:
        """Set any of ``postback_url`` (str or None), ``drop_share`` (0..1), ``seed`` (int; restarts
        the drop decisions), ``duplicate_next`` (int >= 0), ``rate_limit`` (int > 0 or None).
        Everything is validated before anything changes. Returns the switches."""
        unknown = set(switches) - self._SWITCHES
        if unknown:
            raise ValueError(f"unknown switch(es): {', '.join(sorted(unknown))}")
        url = switches.get("postback_url")
        if (
            "postback_url" in switches
            and url is not None
            and not (isinstance(url, str) and url.startswith(("http://", "https://")))
        ):
            raise ValueError("postback_url must be an http(s) URL or null")
        share = switches.get("drop_share", 0.0)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise ValueError("drop_share must be a number from 0 to 1")
        seed = switches.get("seed")
        if "seed" in switches and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer")
        duplicates = switches.get("duplicate_next", 0)
        if isinstance(duplicates, bool) or not isinstance(duplicates, int) or duplicates < 0:
            raise ValueError("duplicate_next must be an integer >= 0")
        content_type = switches.get("postback_content_type", _JSON)
        if content_type not in {_JSON, _FORM}:
            raise ValueError(f"postback_content_type must be {_JSON} or {_FORM}")
        limit = switches.get("rate_limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
            raise ValueError("rate_limit must be an integer > 0 or null")
        with self._lock:
            if "postback_url" in switches:
                self._postback_url = url
            if "drop_share" in switches:
                self._drop_share = float(share)
            if "seed" in switches:
                self._seed = seed
                self._drop_random = random.Random(seed)  # noqa: S311 - reproducible drops
            if "duplicate_next" in switches:
                self._duplicate_next = duplicates
            if "postback_content_type" in switches:
                self._content_type = content_type
            if "rate_limit" in switches:
                self._rate_limit = limit
                self._request_times.clear()
            return self._switches_locked()

    def switches(self) -> dict[str, Any]:
        with self._lock:
            return self._switches_locked()

    def _switches_locked(self) -> dict[str, Any]:
        return {
            "postback_url": self._postback_url,
            "drop_share": self._drop_share,
            "seed": self._seed,
            "duplicate_next": self._duplicate_next,
            "rate_limit": self._rate_limit,
            "postback_content_type": self._content_type,
        }

    def use_clock(self, clock: Callable[[], datetime] | None) -> None:
        """Take timestamps from ``clock`` (IST-aware datetimes); None goes back to the wall clock."""
        with self._lock:
            self._clock = clock or _ist_now

    # -- inspection -----------------------------------------------------------------------------

    def orders(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """``GET /orders``: every order's current state (``user_id``'s only, if given), oldest
        order first."""
        with self._lock:
            return [
                dict(order.current)
                for order in self._orders.values()
                if user_id is None or order.current["placed_by"] == user_id
            ]

    def history(self, order_id: str, user_id: str | None = None) -> list[dict[str, Any]]:
        """``GET /orders/{order_id}``: every state the order passed through, oldest first. Another
        user's order is not found, as at Kite."""
        with self._lock:
            order = self._orders.get(order_id)
            if order is None or user_id not in (None, order.current["placed_by"]):
                raise _input_error(_MSG_NOT_FOUND)
            return [dict(state) for state in order.history]

    def deliveries(self) -> list[PostbackDelivery]:
        """Every postback sent or held back so far, in sending order."""
        with self._lock:
            return list(self._deliveries)

    # -- Kite's order API -----------------------------------------------------------------------

    def handle_api(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        form: Mapping[str, str],
        authenticate: Callable[[], object],
    ) -> Any:
        """Answer an order route's ``data``; raises OrderApiError for Kite's error envelope.
        ``authenticate`` raises the caller's TokenException for a dead or wrong token, and may
        return the caller's profile, whose ``user_id`` picks the orders it sees."""
        self._admit()
        caller = authenticate()
        user_id = self.user_id
        if isinstance(caller, Mapping) and isinstance(caller.get("user_id"), str):
            user_id = caller["user_id"]
        parts = path.strip("/").split("/")
        if method == "GET" and len(parts) == 1:
            return self.orders(user_id)
        if method == "GET" and len(parts) == 2:
            return self.history(parts[1], user_id)
        if method == "POST" and len(parts) == 2:
            return {"order_id": self.place(parts[1], form, user_id=user_id)}
        if method == "PUT" and len(parts) == 3:
            self._check_variety(parts[1], parts[2], user_id)
            return {"order_id": self.modify(parts[2], **self._modification(form))}
        if method == "DELETE" and len(parts) == 3:
            self._check_variety(parts[1], parts[2], user_id)
            return {"order_id": self.cancel(parts[2])}
        raise OrderApiError("GeneralException", "Method not allowed.", HTTPStatus.METHOD_NOT_ALLOWED)

    def _admit(self) -> None:
        # Kite's limit is per api_key; the simulator serves one, so one window suffices.
        with self._lock:
            if self._rate_limit is None:
                return
            now = time.monotonic()
            while self._request_times and now - self._request_times[0] >= 1.0:
                self._request_times.popleft()
            if len(self._request_times) >= self._rate_limit:
                raise OrderApiError("NetworkException", "Too many requests", HTTPStatus.TOO_MANY_REQUESTS)
            self._request_times.append(now)

    def _check_variety(self, variety: str, order_id: str, user_id: str) -> None:
        with self._lock:
            order = self._orders.get(order_id)
            if order is None or order.current["placed_by"] != user_id:
                raise _input_error(_MSG_NOT_FOUND)
            if order.current["variety"] != variety:
                raise _input_error("Invalid `variety`.")

    @staticmethod
    def _modification(form: Mapping[str, str]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if form.get("quantity"):
            changes["quantity"] = _positive_int(form, "quantity")
        if form.get("price"):
            changes["price"] = _number(form, "price")
        if form.get("trigger_price"):
            changes["trigger_price"] = _number(form, "trigger_price")
        if form.get("order_type"):
            if form["order_type"] not in _ORDER_TYPES:
                raise _input_error("Invalid `order_type`.")
            changes["order_type"] = form["order_type"]
        return changes

    # -- moving orders --------------------------------------------------------------------------

    def place(
        self,
        variety: str,
        form: Mapping[str, str],
        *,
        reject_reason: str | None = None,
        user_id: str | None = None,
    ) -> str:
        """Validate a placement as Kite does and open the order (``OPEN`` postback), or reject it
        at the risk checks when ``reject_reason`` is given (``REJECTED`` postback). The order is
        ``user_id``'s (the book's user by default). Returns the order_id."""
        order = self._new_order(variety, form)
        order["placed_by"] = user_id or self.user_id
        with self._delivery_lock:
            with self._lock:
                self._sequence += 1
                order_id = f"{self._clock().strftime('%y%m%d')}{self._sequence:09d}"
                order["order_id"] = order_id
                # Kite's guid identifies the placement request; derived here so a seeded day repeats.
                order["guid"] = hashlib.sha256(f"guid:{order_id}".encode()).hexdigest()[:18]
                order["exchange_order_id"] = None
                record = _Order(current=order)
                self._orders[order_id] = record
                self._step(record, "PUT ORDER REQ RECEIVED")
                self._step(record, "VALIDATION PENDING")
                if reject_reason is not None:
                    self._step(
                        record,
                        "REJECTED",
                        status_message=reject_reason,
                        pending_quantity=0,
                        cancelled_quantity=0,
                    )
                    postbacks = self._postbacks_locked(record, "REJECTED")
                else:
                    self._step(record, "OPEN PENDING")
                    self._step(record, "OPEN", exchange_order_id=f"{1_300_000_000_000_000 + self._sequence}")
                    postbacks = self._postbacks_locked(record, "OPEN")
            self._send(postbacks)
        return order_id

    def fill(self, order_id: str, quantity: int | None = None, price: float | None = None) -> dict[str, Any]:
        """Fill ``quantity`` more (all that is pending when None) at ``price``: ``OPEN`` with the
        new filled_quantity (an ``UPDATE`` postback) or, once nothing is pending, ``COMPLETE``."""
        with self._delivery_lock:
            with self._lock:
                record = self._open_order(order_id, "filled")
                current = record.current
                pending = int(current["pending_quantity"])
                lot = pending if quantity is None else quantity
                if lot <= 0 or lot > pending:
                    raise _input_error(f"Fill quantity must be 1..{pending}.")
                fill_price = float(price if price is not None else current["price"] or 100.0)
                filled = int(current["filled_quantity"])
                average = (float(current["average_price"]) * filled + fill_price * lot) / (filled + lot)
                status = "COMPLETE" if lot == pending else "OPEN"
                self._step(
                    record,
                    status,
                    filled_quantity=filled + lot,
                    pending_quantity=pending - lot,
                    average_price=round(average, 2),
                )
                postbacks = self._postbacks_locked(record, "COMPLETE" if status == "COMPLETE" else "UPDATE")
                state = dict(record.current)
            self._send(postbacks)
        return state

    def modify(self, order_id: str, **changes: Any) -> str:
        """Modify an open order's quantity, price, trigger_price or order_type (an ``UPDATE``
        postback; the book says OPEN with the same filled_quantity)."""
        unknown = set(changes) - {"quantity", "price", "trigger_price", "order_type"}
        if unknown:
            raise _input_error(f"Cannot modify {', '.join(sorted(unknown))}.")
        with self._delivery_lock:
            with self._lock:
                record = self._open_order(order_id, "modified")
                current = record.current
                quantity = int(changes.get("quantity", current["quantity"]))
                if quantity <= int(current["filled_quantity"]):
                    raise _input_error("Quantity must be more than the filled quantity.")
                self._step(record, "MODIFY VALIDATION PENDING")
                self._step(record, "MODIFY PENDING")
                self._step(
                    record,
                    "OPEN",
                    **{**changes, "quantity": quantity},
                    pending_quantity=quantity - int(current["filled_quantity"]),
                    modified=True,
                )
                postbacks = self._postbacks_locked(record, "UPDATE")
            self._send(postbacks)
        return order_id

    def cancel(self, order_id: str) -> str:
        """Cancel what is pending of an open order (``CANCELLED`` postback)."""
        with self._delivery_lock:
            with self._lock:
                record = self._open_order(order_id, "cancelled")
                self._step(record, "CANCEL PENDING")
                self._step(
                    record,
                    "CANCELLED",
                    cancelled_quantity=int(record.current["pending_quantity"]),
                    pending_quantity=0,
                    status_message="Cancelled by user",
                )
                postbacks = self._postbacks_locked(record, "CANCELLED")
            self._send(postbacks)
        return order_id

    def reject(self, order_id: str, reason: str = "Rejected by the exchange") -> str:
        """The exchange rejects an open order (``REJECTED`` postback)."""
        with self._delivery_lock:
            with self._lock:
                record = self._open_order(order_id, "rejected")
                self._step(
                    record,
                    "REJECTED",
                    cancelled_quantity=int(record.current["pending_quantity"]),
                    pending_quantity=0,
                    status_message=reason,
                )
                postbacks = self._postbacks_locked(record, "REJECTED")
            self._send(postbacks)
        return order_id

    def forge(
        self, order_id: str, *, status: str | None = None, filled_quantity: int | None = None
    ) -> dict[str, Any]:
        """Send a forged postback: the order's latest genuine one with ``status`` and quantities
        altered, order_id and order_timestamp kept, so its checksum verifies. Without arguments
        it claims a ``(status, filled_quantity)`` that the order's history never shows. Returns
        the claimed state."""
        with self._delivery_lock:
            with self._lock:
                record = self._orders.get(order_id)
                if record is None or record.last_postback is None:
                    raise _input_error(_MSG_NOT_FOUND)
                quantity = int(record.current["quantity"])
                if status is None or filled_quantity is None:
                    status, filled_quantity = self._unseen_claim(record, status, filled_quantity)
                if status not in POSTBACK_STATUSES or not 0 <= filled_quantity <= quantity:
                    raise _input_error("A forged postback needs a postback status and 0..quantity filled.")
                payload = dict(record.last_postback)
                pending = 0 if status in FINAL_STATUSES else quantity - filled_quantity
                payload.update(
                    status=status,
                    filled_quantity=filled_quantity,
                    pending_quantity=pending,
                    unfilled_quantity=pending,
                    cancelled_quantity=quantity - filled_quantity if status == "CANCELLED" else 0,
                )
                postbacks = [_Postback(payload, "forged")]
            self._send(postbacks)
        return {"order_id": order_id, "status": status, "filled_quantity": filled_quantity}

    @staticmethod
    def _unseen_claim(record: _Order, status: str | None, filled: int | None) -> tuple[str, int]:
        quantity = int(record.current["quantity"])
        seen = {(state["status"], int(state["filled_quantity"])) for state in record.history}
        claims = [
            ("COMPLETE", quantity),
            ("CANCELLED", 0),
            ("REJECTED", 0),
            *(("UPDATE", n) for n in range(quantity - 1, 0, -1)),
        ]
        for claim_status, claim_filled in claims:
            book_status = "OPEN" if claim_status == "UPDATE" else claim_status
            if status not in (None, claim_status) or filled not in (None, claim_filled):
                continue
            if (book_status, claim_filled) not in seen:
                return claim_status, claim_filled
        raise _input_error("Every claim this order could forge is in its history.")

    # -- internals (call with the state lock held) -----------------------------------------------

    def _new_order(self, variety: str, form: Mapping[str, str]) -> dict[str, Any]:
        if variety not in _VARIETIES:
            raise _input_error("Invalid `variety`.")
        missing = [
            name
            for name in ("exchange", "tradingsymbol", "transaction_type", "quantity", "product", "order_type")
            if not form.get(name)
        ]
        if missing:
            raise _input_error(f"Missing or empty field(s): {', '.join(f'`{m}`' for m in missing)}.")
        if form["exchange"] not in _EXCHANGES:
            raise _input_error("Invalid `exchange`.")
        if form["transaction_type"] not in {"BUY", "SELL"}:
            raise _input_error("Invalid `transaction_type`.")
        if form["product"] not in _PRODUCTS:
            raise _input_error("Invalid `product`.")
        order_type = form["order_type"]
        if order_type not in _ORDER_TYPES:
            raise _input_error("Invalid `order_type`.")
        validity = form.get("validity") or "DAY"
        if validity not in _VALIDITIES:
            raise _input_error("Invalid `validity`.")
        quantity = _positive_int(form, "quantity")
        price = _number(form, "price")
        trigger_price = _number(form, "trigger_price")
        if order_type in {"LIMIT", "SL"} and price <= 0:
            raise _input_error("Price is required for LIMIT and SL orders.")
        if order_type in {"SL", "SL-M"} and trigger_price <= 0:
            raise _input_error("Trigger price is required for SL and SL-M orders.")
        try:
            market_protection = int(form.get("market_protection") or "0")
        except ValueError:
            raise _input_error("Invalid `market_protection`.") from None
        # SEBI's rules since April 2026: a MARKET order without protection is refused.
        if order_type == "MARKET" and market_protection == 0:
            raise _input_error("Market orders require `market_protection` (-1 or 1..100).")
        if market_protection != 0 and not (market_protection == -1 or 1 <= market_protection <= 100):
            raise _input_error("Invalid `market_protection`.")
        tag = form.get("tag") or None
        if tag is not None and len(tag) > _MAX_TAG_LENGTH:
            raise _input_error(f"`tag` can be at most {_MAX_TAG_LENGTH} characters.")
        tradingsymbol = form["tradingsymbol"]
        return {
            "placed_by": self.user_id,
            "order_id": "",
            "exchange_order_id": None,
            "parent_order_id": None,
            "status": "",
            "status_message": None,
            "status_message_raw": None,
            "order_timestamp": "",
            "exchange_update_timestamp": None,
            "exchange_timestamp": None,
            "variety": variety,
            "modified": False,
            "exchange": form["exchange"],
            "tradingsymbol": tradingsymbol,
            "instrument_token": zlib.crc32(f"{form['exchange']}:{tradingsymbol}".encode()) % 10_000_000,
            "order_type": order_type,
            "transaction_type": form["transaction_type"],
            "validity": validity,
            "validity_ttl": 0,
            "product": form["product"],
            "quantity": quantity,
            "disclosed_quantity": int(_number(form, "disclosed_quantity")),
            "price": price,
            "trigger_price": trigger_price,
            "average_price": 0.0,
            "filled_quantity": 0,
            "pending_quantity": quantity,
            "cancelled_quantity": 0,
            "market_protection": market_protection,
            "meta": {},
            "tag": tag,
            "tags": [tag] if tag else [],
            "guid": "",
        }

    def _open_order(self, order_id: str, action: str) -> _Order:
        record = self._orders.get(order_id)
        if record is None:
            raise _input_error(_MSG_NOT_FOUND)
        if record.current["status"] != "OPEN":
            raise _input_error(_MSG_PROCESSED.format(action=action))
        return record

    def _step(self, record: _Order, status: str, **changes: Any) -> None:
        current = record.current
        now = self._clock().astimezone(IST).strftime(_TIMESTAMP_FORMAT)
        # An order's timestamps never go back, whatever clock is in use.
        timestamp = max(now, current["order_timestamp"] or now)
        current.update(changes, status=status, order_timestamp=timestamp)
        if current["exchange_order_id"] is not None:
            current["exchange_timestamp"] = current["exchange_timestamp"] or timestamp
            current["exchange_update_timestamp"] = timestamp
        record.history.append(dict(current))

    def _postbacks_locked(self, record: _Order, status: str) -> list[_Postback]:
        current = record.current
        order_id, order_timestamp = current["order_id"], current["order_timestamp"]
        payload: dict[str, Any] = {
            "user_id": current["placed_by"],
            "unfilled_quantity": current["pending_quantity"],
            "app_id": self.app_id,
            "checksum": hashlib.sha256(f"{order_id}{order_timestamp}{self._api_secret}".encode()).hexdigest(),
        }
        payload.update({k: v for k, v in current.items() if k not in {"modified", "validity_ttl", "tags"}})
        payload["status"] = status
        record.last_postback = payload
        postbacks = [_Postback(payload, "genuine")]
        if self._duplicate_next > 0:
            self._duplicate_next -= 1
            postbacks.append(_Postback(payload, "duplicate"))
        return postbacks

    def _send(self, postbacks: list[_Postback]) -> None:
        # Called with the delivery lock held and the state lock free.
        duplicated = any(postback.kind == "duplicate" for postback in postbacks)
        for postback in postbacks:
            body = json.dumps(postback.payload, separators=(",", ":")).encode("utf-8")
            with self._lock:
                url, content_type = self._postback_url, self._content_type
                # One draw per genuine postback keeps a seed's drops the same whatever else is
                # switched; a postback switched to be duplicated is never dropped, so it arrives twice.
                draw = self._drop_random.random() if postback.kind == "genuine" else 1.0
                dropped = draw < self._drop_share and not duplicated
            http_status: int | None = None
            if dropped:
                outcome = "dropped"
            elif url is None:
                outcome = "no_url"
            else:
                http_status = _post_once(url, body, content_type)
                outcome = "delivered" if http_status is not None and 200 <= http_status < 300 else "failed"
            delivery = PostbackDelivery(
                order_id=postback.payload["order_id"],
                status=postback.payload["status"],
                filled_quantity=int(postback.payload["filled_quantity"]),
                order_timestamp=postback.payload["order_timestamp"],
                kind=postback.kind,
                outcome=outcome,
                http_status=http_status,
                body=body,
            )
            with self._lock:
                self._deliveries.append(delivery)

    # -- test controls over HTTP ----------------------------------------------------------------

    def handle_control(self, method: str, path: str, body: bytes) -> Any:
        """``/__sim/orders/...`` with a JSON body: ``GET /__sim/orders`` (the book),
        ``GET /__sim/orders/deliveries`` (postbacks, without bodies), ``POST`` to ``switches``,
        ``place`` (Kite's form fields, ``variety``, ``reject_reason``), ``day`` (the arguments of
        :func:`trading_day`) and ``{order_id}/fill|modify|cancel|reject|forge``."""
        if len(body) > _MAX_CONTROL_BODY_BYTES:
            raise _input_error("Control body too large.")
        try:
            params = json.loads(body or b"{}")
        except ValueError as exc:
            raise _input_error(f"Invalid control body: {exc}") from None
        if not isinstance(params, dict):
            raise _input_error("Invalid control body: a JSON object is expected.")
        parts = path.strip("/").split("/")[2:]  # after "__sim", "orders"
        try:
            return self._control(method, parts, params)
        except (TypeError, ValueError) as exc:
            raise _input_error(f"Invalid control: {exc}") from None

    def _control(self, method: str, parts: list[str], params: dict[str, Any]) -> Any:
        if method == "GET" and parts == []:
            return self.orders()
        if method == "GET" and parts == ["deliveries"]:
            return [delivery.summary() for delivery in self.deliveries()]
        if method != "POST":
            raise OrderApiError("GeneralException", "Route not found.", HTTPStatus.NOT_FOUND)
        if parts == ["switches"]:
            return self.configure(**params)
        if parts == ["place"]:
            params = dict(params)
            variety = str(params.pop("variety", "regular"))
            reason = params.pop("reject_reason", None)
            owner = params.pop("user_id", None)
            form = {str(k): str(v) for k, v in params.items()}
            return {
                "order_id": self.place(
                    variety,
                    form,
                    reject_reason=None if reason is None else str(reason),
                    user_id=None if owner is None else str(owner),
                )
            }
        if parts == ["day"]:
            return trading_day(self, **params).summary()
        if len(parts) == 2:
            order_id, action = parts
            if action == "fill":
                return self.fill(order_id, quantity=params.get("quantity"), price=params.get("price"))
            if action == "modify":
                return {"order_id": self.modify(order_id, **params)}
            if action == "cancel":
                return {"order_id": self.cancel(order_id)}
            if action == "reject":
                return {"order_id": self.reject(order_id, **params)}
            if action == "forge":
                return self.forge(order_id, **params)
        raise OrderApiError("GeneralException", "Route not found.", HTTPStatus.NOT_FOUND)


def _post_once(url: str, body: bytes, content_type: str) -> int | None:
    """POST a postback once, as Kite does (no retry); the HTTP status, or None if nobody answered."""
    request = urllib.request.Request(  # noqa: S310 - the URL is the configured http(s) postback URL
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=_POSTBACK_TIMEOUT_SECONDS) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return None


# -- a scripted trading day ---------------------------------------------------------------------

_SYMBOLS = (
    ("NSE", "SBIN", 820.0),
    ("NSE", "INFY", 1510.0),
    ("NSE", "RELIANCE", 1290.0),
    ("BSE", "TCS", 3400.0),
)


@dataclass(frozen=True)
class TradingDay:
    """What a scripted day did: its orders and the postbacks it caused."""

    order_ids: list[str]
    states: int
    postbacks: list[PostbackDelivery]

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for delivery in self.postbacks:
            key = delivery.kind if delivery.kind != "genuine" else delivery.outcome
            kinds[key] = kinds.get(key, 0) + 1
        return {"orders": len(self.order_ids), "states": self.states, "postbacks": kinds}


def trading_day(
    book: OrderBook,
    *,
    orders: int = 50,
    seed: int = 0,
    drop_share: float = 0.0,
    duplicates: int = 0,
    forgeries: int = 0,
    start: str | None = None,
    users: Sequence[str] | None = None,
) -> TradingDay:
    """Place ``orders`` orders and move them along random paths chosen by ``seed``, interleaved
    across orders: some rejected at placement, then modifications and partial fills, then
    COMPLETE, CANCELLED, REJECTED or left OPEN. ``drop_share`` of the postbacks are dropped,
    ``duplicates`` of them sent twice and, at the end, ``forgeries`` forged postbacks sent for
    finished orders (claims their histories never show). ``start`` (``YYYY-MM-DD HH:MM:SS`` IST)
    takes timestamps from a clock starting there and stepping by seconds, so a seed repeats the
    same day exactly. ``users`` spreads the orders over these user_ids (default: the book's
    user). The book's switches are restored afterwards."""
    if orders < 1:
        raise ValueError("orders must be at least 1")
    rng = random.Random(seed)  # noqa: S311 - a reproducible day
    previous = book.switches()
    already_sent = len(book.deliveries())
    book.configure(drop_share=drop_share, seed=seed, duplicate_next=0)
    if start is not None:
        book.use_clock(SteppingClock(datetime.strptime(start, _TIMESTAMP_FORMAT).replace(tzinfo=IST)))
    try:
        scripts = [_order_script(rng) for _ in range(orders)]
        total_steps = sum(len(script) for script in scripts)
        duplicate_at = set(rng.sample(range(total_steps), min(duplicates, total_steps)))
        order_ids: list[str | None] = [None] * orders
        pending = list(range(orders))
        step_number = 0
        while pending:
            index = rng.choice(pending)
            action, amount = scripts[index].pop(0)
            if not scripts[index]:
                pending.remove(index)
            if step_number in duplicate_at:
                book.configure(duplicate_next=1)
            step_number += 1
            order_id = order_ids[index]
            if action in {"place", "place-rejected"}:
                exchange, symbol, price = rng.choice(_SYMBOLS)
                form = {
                    "exchange": exchange,
                    "tradingsymbol": symbol,
                    "transaction_type": rng.choice(("BUY", "SELL")),
                    "quantity": str(amount),
                    "product": rng.choice(("CNC", "MIS")),
                    "order_type": "LIMIT",
                    "price": f"{price:.2f}",
                    "tag": f"day{seed}",
                }
                reason = "RMS: Margin exceeds available funds" if action == "place-rejected" else None
                owner = rng.choice(users) if users else None
                order_ids[index] = book.place("regular", form, reject_reason=reason, user_id=owner)
            elif order_id is None:
                raise AssertionError("a script starts with its placement")
            elif action == "fill":
                book.fill(order_id, quantity=amount)
            elif action == "fill-rest":
                book.fill(order_id)
            elif action == "modify":
                book.modify(order_id, quantity=amount)
            elif action == "cancel":
                book.cancel(order_id)
            else:
                book.reject(order_id)
        placed = [order_id for order_id in order_ids if order_id is not None]
        finished = [order_id for order_id in placed if book.history(order_id)[-1]["status"] in FINAL_STATUSES]
        for order_id in rng.sample(finished, min(forgeries, len(finished))):
            book.forge(order_id)
    finally:
        book.configure(
            drop_share=previous["drop_share"],
            duplicate_next=previous["duplicate_next"],
            **({"seed": previous["seed"]} if previous["seed"] is not None else {}),
        )
        if start is not None:
            book.use_clock(None)
    states = sum(len(book.history(order_id)) for order_id in placed)
    return TradingDay(order_ids=placed, states=states, postbacks=book.deliveries()[already_sent:])


def _order_script(rng: random.Random) -> list[tuple[str, int]]:
    """One order's steps: (action, quantity). Quantities keep every step valid in order."""
    quantity = rng.randint(2, 20) * 5
    if rng.random() < 0.08:
        return [("place-rejected", quantity)]
    steps: list[tuple[str, int]] = [("place", quantity)]
    filled = 0
    for _ in range(rng.randint(0, 3)):
        if rng.random() < 0.25:
            quantity += rng.randint(1, 4) * 5
            steps.append(("modify", quantity))
        elif quantity - filled > 1:
            lot = rng.randint(1, quantity - filled - 1)
            filled += lot
            steps.append(("fill", lot))
    ending = rng.random()
    if ending < 0.6:
        steps.append(("fill-rest", 0))
    elif ending < 0.8:
        steps.append(("cancel", 0))
    elif ending < 0.9:
        steps.append(("reject", 0))
    return steps


# -- make orders --------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local.kite_orders",
        description="Script a trading day at the Kite simulator of the running local stack.",
    )
    parser.add_argument("--orders", type=int, default=50, help="orders to place (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="the day's paths and drops (default 0)")
    parser.add_argument("--drop-share", type=float, default=0.0, help="share of postbacks dropped, 0..1")
    parser.add_argument("--duplicates", type=int, default=0, help="postbacks sent twice")
    parser.add_argument("--forgeries", type=int, default=0, help="forged postbacks sent at the end")
    parser.add_argument("--kite-url", help="the simulator (default: the running `make dev`'s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Ask the simulator to play a trading day and print what it did. 1 if it could not."""
    args = _parse_args(argv)
    kite_url = args.kite_url
    if not kite_url:
        from local.dev_state import StackNotRunning, read_state

        try:
            kite_url = read_state().kite_url
        except StackNotRunning as exc:
            print(exc, file=sys.stderr)
            return 1
    day = {
        "orders": args.orders,
        "seed": args.seed,
        "drop_share": args.drop_share,
        "duplicates": args.duplicates,
        "forgeries": args.forgeries,
    }
    request = urllib.request.Request(  # noqa: S310 - the simulator's http URL
        f"{kite_url.rstrip('/')}/__sim/orders/day",
        data=json.dumps(day).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310
            summary = json.loads(response.read())["data"]
    except urllib.error.HTTPError as error:
        print(f"the simulator refused the day: {json.loads(error.read()).get('message')}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(f"the Kite simulator at {kite_url} did not answer: {error}", file=sys.stderr)
        return 1
    postbacks = ", ".join(f"{count} {kind}" for kind, count in sorted(summary["postbacks"].items()))
    print(
        f"{summary['orders']} orders, {summary['states']} states in their histories; postbacks: {postbacks}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
