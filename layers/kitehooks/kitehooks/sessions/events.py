"""Session events on the account's default EventBridge bus: Kite's session-expiry hook, server-side.

``Source`` is ``kitehooks``; ``DetailType`` is ``Kite session started`` (after each stored login) or
``Kite session ended`` (detail ``user_id``, ``status``, ``reason`` = expired | revoked |
token_invalid, ``at``). No event ever carries a token.

An event is sent only after the session write it announces has succeeded, and a failed PutEvents
never undoes that write: the stored session is the truth (``status`` answers it), the event is a
notification of it. A failure is logged and counted (metric ``SessionEventNotSent``, alarmed);
callers that run on a schedule also fail their run so Lambda's errors alarm sees it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from botocore.exceptions import BotoCoreError, ClientError

from kitehooks.aws import error_code
from kitehooks.deadline import Deadline, DeadlineExceeded
from kitehooks.sessions.store import KiteSession, SessionStatus

logger = Logger(child=True)

SOURCE = "kitehooks"
SESSION_STARTED = "Kite session started"
SESSION_ENDED = "Kite session ended"
EVENT_BUS = "default"
# The whole PutEvents call (two attempts of 1 s connect + 3 s read at worst) stops here.
PUT_EVENTS_SECONDS = 4.0
NOT_SENT_METRIC = "SessionEventNotSent"

EndReason = Literal["expired", "revoked", "token_invalid"]


class EventBridgePutEvents(Protocol):
    """The one EventBridge call kitehooks makes (boto3's ``events`` client)."""

    def put_events(self, *, Entries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]: ...  # noqa: N803


@dataclass(frozen=True, slots=True)
class SessionEvent:
    detail_type: str
    detail: dict[str, str]

    def entry(self) -> dict[str, Any]:
        return {
            "Source": SOURCE,
            "DetailType": self.detail_type,
            "Detail": json.dumps(self.detail, separators=(",", ":")),
            "EventBusName": EVENT_BUS,
        }


def _at(now: datetime) -> str:
    return now.astimezone(UTC).isoformat()


def session_started(session: KiteSession, now: datetime) -> SessionEvent:
    # Built field by field, never from the session as a whole: a token cannot slip in.
    return SessionEvent(
        SESSION_STARTED,
        {
            "user_id": session.user_id,
            "status": session.status,
            "login_time": session.login_time,
            "expires_at": session.expires_at,
            "at": _at(now),
        },
    )


def session_ended(user_id: str, status: SessionStatus, reason: EndReason, now: datetime) -> SessionEvent:
    return SessionEvent(
        SESSION_ENDED, {"user_id": user_id, "status": status, "reason": reason, "at": _at(now)}
    )


class SessionEvents:
    """Sends session events, each bounded by the invocation's deadline; never raises."""

    def __init__(self, client: EventBridgePutEvents, deadline: Deadline) -> None:
        self._client = client
        self._deadline = deadline
        self.not_sent = 0

    def send(self, event: SessionEvent) -> bool:
        """True once EventBridge accepted the event; False (logged, counted) otherwise."""
        reason = ""
        try:
            with self._deadline.limit(PUT_EVENTS_SECONDS):
                answer = self._client.put_events(Entries=[event.entry()])
            if answer.get("FailedEntryCount", 0):
                failed = answer.get("Entries") or [{}]
                reason = str(failed[0].get("ErrorCode") or "entry refused")
        except DeadlineExceeded:
            reason = "EventBridge did not answer in time"
        except (BotoCoreError, ClientError) as error:
            reason = error_code(error)
        if not reason:
            return True
        self.not_sent += 1
        logger.error(
            "session event not sent",
            extra={
                "detail_type": event.detail_type,
                "kite_user_id": event.detail.get("user_id", ""),
                "reason": reason,
            },
        )
        # Namespace and service dimension from the template's POWERTOOLS_* settings, as the alarm expects.
        with single_metric(name=NOT_SENT_METRIC, unit=MetricUnit.Count, value=1):
            pass
        return False
