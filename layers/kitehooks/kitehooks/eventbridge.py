"""kitehooks' events on the account's default EventBridge bus: one ``PutEvents`` entry at a time,
bounded by the invocation's deadline, never raising. ``Source`` is ``kitehooks``; the session
events (:mod:`kitehooks.sessions.events`) and the order events (:mod:`kitehooks.orders.events`)
say what each ``DetailType`` carries. No event ever carries a token or a checksum.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from kitehooks.aws import error_code
from kitehooks.deadline import Deadline, DeadlineExceeded

SOURCE = "kitehooks"
EVENT_BUS = "default"
# The whole PutEvents call (two attempts of 1 s connect + 3 s read at worst) stops here.
PUT_EVENTS_SECONDS = 4.0


class EventBridgePutEvents(Protocol):
    """The one EventBridge call kitehooks makes (boto3's ``events`` client)."""

    def put_events(self, *, Entries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]: ...  # noqa: N803


def entry(detail_type: str, detail: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "Source": SOURCE,
        "DetailType": detail_type,
        "Detail": json.dumps(detail, separators=(",", ":")),
        "EventBusName": EVENT_BUS,
    }


def put_one(
    client: EventBridgePutEvents, deadline: Deadline, event: Mapping[str, Any], keep: float = 0.0
) -> str:
    """Put one entry. ``""`` once EventBridge accepted it, else why not (an error code, never a
    value from the request); the caller logs and counts that in its own words. ``keep``: seconds
    of the deadline left for what the caller must do when the put fails."""
    try:
        with deadline.limit(PUT_EVENTS_SECONDS, keep=keep):
            answer = client.put_events(Entries=[event])
    except DeadlineExceeded:
        return "EventBridge did not answer in time"
    except (BotoCoreError, ClientError) as error:
        return error_code(error)
    if answer.get("FailedEntryCount", 0):
        failed = answer.get("Entries") or [{}]
        return str(failed[0].get("ErrorCode") or "entry refused")
    return ""
