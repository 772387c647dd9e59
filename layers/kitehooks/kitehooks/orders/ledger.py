"""The order ledger: which order states reached the queue, and which postback claims await Kite's word.

Why a ledger: SQS forgets a deduplication id after five minutes, and Kite's checksum signs only
``order_id + order_timestamp``. To send each order state once beyond that window, and to check a
verified postback's status and quantities against Kite's own history of the order, something
durable must remember both. One DynamoDB item per order holds them:

- ``pk`` = ``orders#<user_id>``, ``sk`` = ``<order_id>``: the reconciler reads one user's orders
  with one Query.
- ``delivered``: a string set of the order's states on the queue (``"OPEN|5"``), from any source.
- ``claims``: a string set of the postbacks not yet judged against Kite's history
  (``"COMPLETE|10|2026-11-30 10:15:02"``: state and the signed ``order_timestamp``). The reconciler
  removes each one when it judges it, with a conditional write, so a claim is judged once.
- ``day`` and ``touched_at`` (sparse index ``RecentPostbacks``): when the order was first
  recorded, so the reconciler polls first the users with new orders since their last poll (an
  order already known is polled anyway while it is open). Both are set once per order: an index
  key that never changes costs no index write, so every later update of the order costs one
  write unit, not three (an index entry moved is a delete and a put).
- ``expires_at``: DynamoDB's TTL, some days on: orders are a day's business.

With ``OrderConfirmation=on`` the postback path writes this with one ``UpdateItem`` after the
queue took the message (one write, the only extra I/O on its path); the reconciler and redrive
write what they send. Sets make every write an idempotent ``ADD``: no read-modify-write, so two
writers never lose each other's states.

DynamoDB's low-level client is used as everywhere in the layer: the resource API costs ~40 ms of
cold start for no gain here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from kitehooks.aws import error_code
from kitehooks.clock import IST
from kitehooks.orders.states import KITE_STATUSES, OrderState, quantity

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

    from kitehooks.postbacks.postback import VerifiedPostback

# Orders are a day's business; GTT and AMO orders reach into the next day. Kept some days more
# so that a late redrive still finds what the queue already has.
RETENTION_SECONDS = 4 * 24 * 3600
RECENT_POSTBACKS_INDEX = "RecentPostbacks"
# A user whose postbacks carry no user_id still gets a ledger; the reconciler never reads it.
UNKNOWN_USER = "-"
UNRECOGNISED_STATUS = "UNRECOGNISED"
# Claims one order may hold awaiting judgement (see _add).
MAX_PENDING_CLAIMS = 256


class LedgerUnavailable(RuntimeError):
    """DynamoDB did not answer or refused; the message says which error, never any value."""


@dataclass(frozen=True, slots=True, order=True)
class Claim:
    """What a verified postback said about its order: a state, and the ``order_timestamp`` Kite signed."""

    status: str
    filled_quantity: int
    order_timestamp: str

    @property
    def state_key(self) -> str:
        return f"{self.status}|{self.filled_quantity}"

    def encode(self) -> str:
        return f"{self.status}|{self.filled_quantity}|{self.order_timestamp}"

    @classmethod
    def decode(cls, text: str) -> Claim | None:
        # Read from the right: the timestamp is signed (no "|" in a genuine one) and the quantity
        # is digits, but Kite signs no status, so a forged one may hold "|" and must still be judged.
        rest, _, order_timestamp = text.rpartition("|")
        status, _, filled_text = rest.rpartition("|")
        filled = quantity(filled_text)
        if filled is None or not status or not order_timestamp:
            return None
        return cls(status, filled, order_timestamp)


@dataclass(frozen=True, slots=True)
class LedgerOrder:
    """One order as the ledger knows it."""

    order_id: str
    delivered: frozenset[str]
    claims: frozenset[Claim]


def trading_day(at: datetime) -> str:
    return at.astimezone(IST).date().isoformat()


def _pk(user_id: str | None) -> str:
    return f"orders#{user_id or UNKNOWN_USER}"


def _strings(values: Iterable[str]) -> AttributeValueTypeDef:
    return {"SS": sorted(set(values))}


class OrderLedger:
    def __init__(self, dynamodb: DynamoDBClient, table_name: str) -> None:
        self._dynamodb = dynamodb
        self._table = table_name

    # -- the postback path -------------------------------------------------------------------

    def record_postback(self, postback: VerifiedPostback, received_at: datetime) -> bool:
        """Record a queued postback's state as delivered and its claim as awaiting Kite's word.
        One UpdateItem. False (and nothing written) when the postback names no order state."""
        state = postback.state
        if state is None:
            return False
        if state.status not in KITE_STATUSES:
            # The status is not signed: a replayed postback could carry any text, and each one
            # would grow the order's item towards DynamoDB's 400 KB. Recorded as one word, the
            # claim is still judged (and flagged: Kite's history never shows that state).
            state = OrderState(state.order_id, UNRECOGNISED_STATUS, state.filled_quantity)
        claim = Claim(state.status, state.filled_quantity, postback.order_timestamp)
        self._add(postback.user_id, state.order_id, [state.key], [claim.encode()], received_at)
        return True

    # -- redrive and the reconciler ----------------------------------------------------------

    def record_delivered(
        self,
        user_id: str | None,
        order_id: str,
        states: Iterable[OrderState],
        claims: Iterable[Claim] = (),
        at: datetime | None = None,
    ) -> None:
        """Record states sent to the queue (and, for a redriven postback, its claim)."""
        keys = [state.key for state in states]
        if keys:
            self._add(user_id, order_id, keys, [claim.encode() for claim in claims], at)

    def delivered(self, user_id: str | None, order_id: str) -> frozenset[str]:
        """The states of one order already on the queue (a strongly consistent read)."""
        try:
            item = self._dynamodb.get_item(
                TableName=self._table,
                Key={"pk": {"S": _pk(user_id)}, "sk": {"S": order_id}},
                ProjectionExpression="delivered",
                ConsistentRead=True,
            ).get("Item", {})
        except (BotoCoreError, ClientError) as error:
            raise LedgerUnavailable(f"DynamoDB GetItem failed ({error_code(error)})") from error
        return frozenset(item.get("delivered", {}).get("SS", []))

    def orders_of(self, user_id: str) -> dict[str, LedgerOrder]:
        """Every order of one user the ledger holds, by order_id (Query, strongly consistent)."""
        orders: dict[str, LedgerOrder] = {}
        for item in self._query_user(user_id):
            order_id = item["sk"]["S"]
            claims = (Claim.decode(text) for text in item.get("claims", {}).get("SS", []))
            orders[order_id] = LedgerOrder(
                order_id=order_id,
                delivered=frozenset(item.get("delivered", {}).get("SS", [])),
                claims=frozenset(claim for claim in claims if claim is not None),
            )
        return orders

    def settle_claim(self, user_id: str, order_id: str, claim: Claim, unconfirmed: bool = False) -> bool:
        """Remove a judged claim. True only for the one caller that removed it: two reconciler
        runs judging the same claim raise its event once. An ``unconfirmed`` claim's state also
        leaves ``delivered`` in the same write: Kite never said it, so it must not stand for the
        order's progress (a forged COMPLETE would otherwise hide the real one when its postback
        is lost)."""
        encoded = claim.encode()
        update = "DELETE claims :claim"
        values: dict[str, AttributeValueTypeDef] = {":claim": {"SS": [encoded]}, ":text": {"S": encoded}}
        if unconfirmed:
            update += ", delivered :state"
            values[":state"] = {"SS": [claim.state_key]}
        try:
            answer = self._dynamodb.update_item(
                TableName=self._table,
                Key={"pk": {"S": _pk(user_id)}, "sk": {"S": order_id}},
                UpdateExpression=update,
                ConditionExpression="contains(claims, :text)",
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW" if unconfirmed else "NONE",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise LedgerUnavailable(f"DynamoDB UpdateItem failed ({error_code(error)})") from error
        except BotoCoreError as error:
            raise LedgerUnavailable(f"DynamoDB UpdateItem failed ({error_code(error)})") from error
        if unconfirmed:
            # A genuine postback of the same state recorded since the history was read (its claim
            # is still there) keeps its state delivered.
            remaining = answer.get("Attributes", {}).get("claims", {}).get("SS", [])
            decoded = (Claim.decode(text) for text in remaining)
            if any(other is not None and other.state_key == claim.state_key for other in decoded):
                self._add(user_id, order_id, [claim.state_key], [], None)
        return True

    def users_with_postbacks_since(self, since: datetime) -> set[str]:
        """Users with an order first recorded at or after ``since`` (same IST day)."""
        users: set[str] = set()
        arguments = {
            "TableName": self._table,
            "IndexName": RECENT_POSTBACKS_INDEX,
            "KeyConditionExpression": "#day = :day AND touched_at >= :since",
            "ExpressionAttributeNames": {"#day": "day"},
            "ExpressionAttributeValues": {
                ":day": {"S": trading_day(since)},
                ":since": {"N": str(int(since.timestamp()))},
            },
        }
        try:
            for page in self._dynamodb.get_paginator("query").paginate(**arguments):  # type: ignore[arg-type]
                for item in page.get("Items", []):
                    user_id = item["pk"]["S"].removeprefix("orders#")
                    if user_id != UNKNOWN_USER:
                        users.add(user_id)
        except (BotoCoreError, ClientError) as error:
            raise LedgerUnavailable(f"DynamoDB Query failed ({error_code(error)})") from error
        return users

    # -- internals ---------------------------------------------------------------------------

    def _add(
        self,
        user_id: str | None,
        order_id: str,
        state_keys: list[str],
        claims: list[str],
        at: datetime | None,
    ) -> None:
        now = at or datetime.now(IST)
        adds = "ADD delivered :delivered"
        values: dict[str, AttributeValueTypeDef] = {
            ":delivered": _strings(state_keys),
            ":day": {"S": trading_day(now)},
            ":at": {"N": str(int(now.timestamp()))},
            ":expires": {"N": str(int(time.time()) + RETENTION_SECONDS)},
        }
        condition: dict[str, Any] = {}
        if claims:
            adds += ", claims :claims"
            values[":claims"] = _strings(claims)
            # Quantities are not signed either: replays of one postback with made-up quantities
            # would grow the item towards DynamoDB's 400 KB. An order never has this many states
            # awaiting one run's judgement; past it, nothing more is recorded (and counted).
            values[":most"] = {"N": str(MAX_PENDING_CLAIMS)}
            condition = {"ConditionExpression": "attribute_not_exists(claims) OR size(claims) < :most"}
        update = (
            f"{adds} SET #day = if_not_exists(#day, :day), touched_at = if_not_exists(touched_at, :at),"
            " expires_at = :expires"
        )
        try:
            self._dynamodb.update_item(
                **condition,
                TableName=self._table,
                Key={"pk": {"S": _pk(user_id)}, "sk": {"S": order_id}},
                UpdateExpression=update,
                ExpressionAttributeNames={"#day": "day"},
                ExpressionAttributeValues=values,
            )
        except (BotoCoreError, ClientError) as error:
            raise LedgerUnavailable(f"DynamoDB UpdateItem failed ({error_code(error)})") from error

    def _query_user(self, user_id: str) -> Iterator[dict[str, AttributeValueTypeDef]]:
        try:
            paginator = self._dynamodb.get_paginator("query")
            for page in paginator.paginate(
                TableName=self._table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": _pk(user_id)}},
                ConsistentRead=True,
            ):
                yield from page.get("Items", [])
        except (BotoCoreError, ClientError) as error:
            raise LedgerUnavailable(f"DynamoDB Query failed ({error_code(error)})") from error
