"""Which sessions a reconciler run polls, and in what order.

Kite allows 10 requests/s per api_key, shared with the app's own calls, so one run reaches a few
hundred sessions at most. Each run therefore polls first the sessions most likely to have an
update it has not seen: those with open orders at their last poll, and those with postbacks since
it (the ledger's ``RecentPostbacks`` index); then every other session, least recently polled
first. A run stops at its deadline and the next run starts with those it did not reach, so at any
number of sessions every one is polled in turn.

Each poll is remembered in the order ledger's table, one item per user: ``pk`` = ``sessions``,
``sk`` = user_id, ``polled_at`` (epoch seconds), ``open_orders`` (bool), TTL ``expires_at``.
They carry no ``day``, so they stay out of the ``RecentPostbacks`` index.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from kitehooks.aws import error_code
from kitehooks.orders.ledger import (
    RECENT_POSTBACKS_INDEX,
    RETENTION_SECONDS,
    UNKNOWN_USER,
    LedgerUnavailable,
    trading_day,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

POLLS_PK = "sessions"


@dataclass(frozen=True, slots=True)
class PollRecord:
    user_id: str
    polled_at: int
    open_orders: bool


class PollRecords:
    """The last poll of each session, in the order ledger's table."""

    def __init__(self, dynamodb: DynamoDBClient, table_name: str) -> None:
        self._dynamodb = dynamodb
        self._table = table_name

    def load(self) -> dict[str, PollRecord]:
        records: dict[str, PollRecord] = {}
        try:
            for page in self._dynamodb.get_paginator("query").paginate(
                TableName=self._table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": POLLS_PK}},
            ):
                for item in page.get("Items", []):
                    user_id = item["sk"]["S"]
                    records[user_id] = PollRecord(
                        user_id,
                        int(item.get("polled_at", {}).get("N", "0")),
                        bool(item.get("open_orders", {}).get("BOOL", False)),
                    )
        except (BotoCoreError, ClientError) as error:
            raise LedgerUnavailable(f"DynamoDB Query failed ({error_code(error)})") from error
        return records

    def record(self, user_id: str, at: datetime, open_orders: bool) -> None:
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": POLLS_PK},
                    "sk": {"S": user_id},
                    "polled_at": {"N": str(int(at.timestamp()))},
                    "open_orders": {"BOOL": open_orders},
                    "expires_at": {"N": str(int(time.time()) + RETENTION_SECONDS)},
                },
            )
        except (BotoCoreError, ClientError) as error:
            raise LedgerUnavailable(f"DynamoDB PutItem failed ({error_code(error)})") from error

    def postbacks_since(self, since: datetime) -> dict[str, int]:
        """The latest ledger write (epoch seconds) of each user with one at or after ``since``,
        on the same IST day. Keys only: the index projects nothing else."""
        latest: dict[str, int] = {}
        try:
            for page in self._dynamodb.get_paginator("query").paginate(
                TableName=self._table,
                IndexName=RECENT_POSTBACKS_INDEX,
                KeyConditionExpression="#day = :day AND touched_at >= :since",
                ExpressionAttributeNames={"#day": "day"},
                ExpressionAttributeValues={
                    ":day": {"S": trading_day(since)},
                    ":since": {"N": str(int(since.timestamp()))},
                },
            ):
                for item in page.get("Items", []):
                    user_id = item["pk"]["S"].removeprefix("orders#")
                    touched = int(item["touched_at"]["N"])
                    if user_id != UNKNOWN_USER and touched > latest.get(user_id, -1):
                        latest[user_id] = touched
        except (BotoCoreError, ClientError) as error:
            raise LedgerUnavailable(f"DynamoDB Query failed ({error_code(error)})") from error
        return latest


# Every this-many places in a run's order go to a session with nothing open, least recently
# polled first: a run that urgent sessions alone would fill still moves the others on, so none
# waits for ever (a quarter of each run at most, the rest stays with the urgent ones).
QUIET_SESSION_EVERY = 4


def polling_order(
    user_ids: Iterable[str], polls: Mapping[str, PollRecord], touched: Mapping[str, int]
) -> list[str]:
    """Sessions with open orders at their last poll or a ledger write since it (a postback; the
    reconciler's own writes come before its poll is recorded) first, then the rest; within each,
    never polled first, then least recently polled. Every :data:`QUIET_SESSION_EVERY`-th place
    goes to the rest, so a run that stops early still reaches some of them."""

    def last_poll(user_id: str) -> int:
        record = polls.get(user_id)
        return -1 if record is None else record.polled_at

    def urgent(user_id: str) -> bool:
        record = polls.get(user_id)
        if record is None:
            return True
        return record.open_orders or touched.get(user_id, -1) > record.polled_at

    ordered = sorted(user_ids, key=lambda user_id: (last_poll(user_id), user_id))
    first = deque(user_id for user_id in ordered if urgent(user_id))
    quiet = deque(user_id for user_id in ordered if not urgent(user_id))
    result: list[str] = []
    while first or quiet:
        quiet_turn = (len(result) + 1) % QUIET_SESSION_EVERY == 0
        source = quiet if (quiet_turn and quiet) or not first else first
        result.append(source.popleft())
    return result


def oldest_poll(user_ids: Iterable[str], polls: Mapping[str, PollRecord], day_start: datetime) -> datetime:
    """Where to start looking for postbacks: the oldest last poll among these sessions, and never
    before the IST day began (the index is kept by day)."""
    oldest = min((polls[user_id].polled_at for user_id in user_ids if user_id in polls), default=None)
    start = int(day_start.timestamp())
    return datetime.fromtimestamp(max(oldest if oldest is not None else start, start), tz=day_start.tzinfo)
