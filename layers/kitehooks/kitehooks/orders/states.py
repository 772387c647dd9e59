"""Order states: what "the same order update" means, for every source that carries one.

Kite's postbacks say ``UPDATE`` for a partial fill or a modification, where its order book and
order history say ``OPEN`` with the new ``filled_quantity``. Both describe one order state,
``(order_id, status, filled_quantity)`` with the book's status, and an order state reaches the
order-updates queue once, whichever source (postback, redrive, reconciler) carries it first.
That is why the queue's ``MessageDeduplicationId`` is derived from the state, not from the bytes
of the body: the reconciler's body (the order as ``GET /orders`` returns it) never equals the
postback's, and Kite's two postbacks of one state need not be byte-identical either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The states Kite posts back (UPDATE is OPEN): an order update. Every other status in an order's
# history (PUT ORDER REQ RECEIVED, VALIDATION PENDING, OPEN PENDING, MODIFY ... PENDING,
# CANCEL PENDING, ...) is Kite's own passage between two of these, and gets no postback.
UPDATE_STATUSES = frozenset({"OPEN", "COMPLETE", "CANCELLED", "REJECTED"})
FINAL_STATUSES = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})
# Every status Kite's orders pass through (UPDATE is the postbacks' word for OPEN). Anything else
# in a postback's unsigned status is not Kite's (the ledger records it as one word).
KITE_STATUSES = frozenset(
    {
        "OPEN",
        "COMPLETE",
        "CANCELLED",
        "REJECTED",
        "TRIGGER PENDING",
        "AMO REQ RECEIVED",
        "PUT ORDER REQ RECEIVED",
        "VALIDATION PENDING",
        "OPEN PENDING",
        "MODIFY VALIDATION PENDING",
        "MODIFY PENDING",
        "MODIFIED",
        "CANCEL PENDING",
        "AMO CANCELLED",
        "LAPSED",
    }
)
# Beyond any real order's size: a "filled_quantity" with more digits is not a quantity.
_MAX_QUANTITY_DIGITS = 12


def book_status(status: str) -> str:
    """The order book's name for a postback's status (``UPDATE`` is ``OPEN``)."""
    return "OPEN" if status == "UPDATE" else status


def quantity(value: Any) -> int | None:
    """A quantity as Kite sends it (a JSON integer, or its text), or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and value >= 0 else None
    if (
        isinstance(value, str)
        and 0 < len(value) <= _MAX_QUANTITY_DIGITS
        and value.isdigit()
        and value.isascii()
    ):
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class OrderState:
    """One state of one order: ``(order_id, status, filled_quantity)``, status as the book says it."""

    order_id: str
    status: str
    filled_quantity: int

    @property
    def key(self) -> str:
        """The state within its order, as the ledger stores it: ``"OPEN|5"``."""
        return f"{self.status}|{self.filled_quantity}"

    @property
    def deduplication_id(self) -> str:
        """The queue's MessageDeduplicationId for this state, the same for every source."""
        return hashlib.sha256(f"{self.order_id}|{self.key}".encode()).hexdigest()

    @property
    def is_update(self) -> bool:
        """Whether Kite posts this state back (and so whether it belongs on the queue)."""
        return self.status in UPDATE_STATUSES

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


def order_state(order_id: str, status: str | None, filled_quantity: Any) -> OrderState | None:
    """The state a postback or an order-book entry describes, or None when it names none
    (no status, or no readable filled_quantity)."""
    filled = quantity(filled_quantity)
    if not status or filled is None:
        return None
    return OrderState(order_id, book_status(status), filled)


def state_of_order(order: Mapping[str, Any]) -> OrderState | None:
    """The state of an order object as ``GET /orders`` or ``GET /orders/{order_id}`` returns it."""
    order_id = order.get("order_id")
    status = order.get("status")
    if not isinstance(order_id, str) or not order_id or not isinstance(status, str):
        return None
    return order_state(order_id, status, order.get("filled_quantity"))


def key_of(status: str, filled_quantity: int) -> str:
    return f"{book_status(status)}|{filled_quantity}"


def parse_key(key: str) -> tuple[str, int] | None:
    """``"OPEN|5"`` -> ``("OPEN", 5)``; None for anything else."""
    status, separator, filled = key.rpartition("|")
    value = quantity(filled)
    if not separator or not status or value is None:
        return None
    return status, value
