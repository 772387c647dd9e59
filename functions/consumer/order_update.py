"""One order-update message, read: who sent it, which order state it says, and what is signed.

Every message on the order-updates queue is one state of one Kite order, ``(order_id, status,
filled_quantity)``, with the order book's status (Kite's postbacks say ``UPDATE`` where its book
says ``OPEN``). Its String attribute ``source`` says where the body comes from:

- ``postback``: Kite's postback as kitehooks received it, checksum verified on receipt.
- ``redrive``: the same, parked when the queue was down and sent later by ``make redrive``
  (verified again on the way).
- ``reconciler``: an order object as Kite's ``GET /orders`` (or that order's history) returns it,
  fetched by kitehooks with the user's own token: a state Kite's order book shows and, as far as
  kitehooks' record tells, no postback delivered.

Kite's postback checksum signs only ``order_id`` and ``order_timestamp``: everything else in a
postback (status, quantities, prices) is Kite's word only as far as Kite's order book later
confirms it (the reconciler raises ``Kite order update unconfirmed`` when it does not). A
reconciler message has no checksum; it is Kite's API's answer over HTTPS.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kitehooks.orders.states import OrderState, state_of_order

Source = Literal["postback", "redrive", "reconciler"]
SOURCES: dict[str, Source] = {"postback": "postback", "redrive": "redrive", "reconciler": "reconciler"}
# What Kite's checksum covers: sha256(order_id + order_timestamp + api_secret).
POSTBACK_SIGNED_FIELDS = ("order_id", "order_timestamp")


class MalformedOrderUpdate(ValueError):
    """The message is not an order update this consumer can read. The message says why, and never
    quotes the body (a postback's body carries its checksum)."""


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """One order-update message, parsed.

    ``status`` is the order book's (``UPDATE`` read as ``OPEN``); ``order`` is the body as Kite
    wrote it, less the postback's ``checksum``. ``signed_fields`` names the fields Kite's checksum
    covers: ``order_id`` and ``order_timestamp`` for a postback or redrive, none for a reconciler
    message, whose every field comes from Kite's API rather than from a signed request.
    """

    source: Source
    message_id: str
    order_id: str
    user_id: str | None
    status: str
    filled_quantity: int
    state: OrderState
    order_timestamp: str | None
    order: Mapping[str, Any]
    signed_fields: tuple[str, ...]


def parse_order_update(record: Mapping[str, Any]) -> OrderUpdate:
    """Read one record of Lambda's SQS event; raise :class:`MalformedOrderUpdate` if it is not an
    order update."""
    message_id = str(record.get("messageId", ""))
    attributes = _string_attributes(record.get("messageAttributes"))
    source = SOURCES.get(attributes.get("source", ""))
    if source is None:
        raise MalformedOrderUpdate("no source attribute of postback, redrive or reconciler")
    body = record.get("body")
    try:
        order = json.loads(body) if isinstance(body, str) else None
    except (json.JSONDecodeError, RecursionError):
        raise MalformedOrderUpdate("body is not JSON") from None
    if not isinstance(order, dict):
        raise MalformedOrderUpdate("body is not a JSON object")
    state = state_of_order(order)
    if state is None:
        raise MalformedOrderUpdate("body names no order state (order_id, status and filled_quantity)")
    # The queue keeps each order's updates in order by this group: a body of another order would
    # have been ordered among the wrong updates.
    group = (record.get("attributes") or {}).get("MessageGroupId")
    if group is not None and group != state.order_id:
        raise MalformedOrderUpdate("order_id of the body is not the message's MessageGroupId")
    user_id = attributes.get("user_id") or _text(order.get("user_id")) or _text(order.get("placed_by"))
    order.pop("checksum", None)  # verified before queueing; of no use to a consumer, and not to be logged
    return OrderUpdate(
        source=source,
        message_id=message_id,
        order_id=state.order_id,
        user_id=user_id,
        status=state.status,
        filled_quantity=state.filled_quantity,
        state=state,
        order_timestamp=_text(order.get("order_timestamp")),
        order=order,
        signed_fields=() if source == "reconciler" else POSTBACK_SIGNED_FIELDS,
    )


def _string_attributes(raw: Any) -> dict[str, str]:
    """Lambda's ``messageAttributes`` (``{"source": {"stringValue": ..., "dataType": "String"}}``)
    as plain strings; other kinds of attribute are left out."""
    if not isinstance(raw, Mapping):
        return {}
    found: dict[str, str] = {}
    for name, value in raw.items():
        if isinstance(value, Mapping) and isinstance(value.get("stringValue"), str):
            found[str(name)] = value["stringValue"]
    return found


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
