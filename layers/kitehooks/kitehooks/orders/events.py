"""``Kite order update unconfirmed``: a verified postback whose state Kite's history never shows.

On the account's default EventBridge bus, ``Source`` = ``kitehooks`` like the session events
(:mod:`kitehooks.sessions.events`), through :mod:`kitehooks.eventbridge`. Detail:
``order_id``, ``user_id``, ``claimed_status``, ``claimed_filled_quantity``, ``kite_status``,
``kite_filled_quantity`` (the order as Kite's book has it now), ``reason``, ``at``. Kite's checksum
signs only ``order_id + order_timestamp``, so such a postback verified and still lied; the event
says so. Never a token nor a checksum.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from kitehooks import eventbridge
from kitehooks.deadline import Deadline
from kitehooks.eventbridge import EventBridgePutEvents

logger = Logger(child=True)

ORDER_UPDATE_UNCONFIRMED = "Kite order update unconfirmed"


@dataclass(frozen=True, slots=True)
class UnconfirmedUpdate:
    order_id: str
    user_id: str
    claimed_status: str
    claimed_filled_quantity: int
    kite_status: str
    kite_filled_quantity: int | None
    reason: str

    def entry(self, now: datetime) -> dict[str, Any]:
        detail = {
            "order_id": self.order_id,
            "user_id": self.user_id,
            "claimed_status": self.claimed_status,
            "claimed_filled_quantity": self.claimed_filled_quantity,
            "kite_status": self.kite_status,
            "kite_filled_quantity": self.kite_filled_quantity,
            "reason": self.reason,
            "at": now.astimezone(UTC).isoformat(),
        }
        return eventbridge.entry(ORDER_UPDATE_UNCONFIRMED, detail)


def put_unconfirmed(
    client: EventBridgePutEvents,
    deadline: Deadline,
    update: UnconfirmedUpdate,
    now: datetime,
    keep: float = 0.0,
) -> bool:
    """True once EventBridge accepted the event; False (logged) otherwise. Never raises."""
    reason = eventbridge.put_one(client, deadline, update.entry(now), keep)
    if not reason:
        return True
    logger.error(
        "order event not sent",
        extra={"order_id": update.order_id, "kite_user_id": update.user_id, "reason": reason},
    )
    return False
