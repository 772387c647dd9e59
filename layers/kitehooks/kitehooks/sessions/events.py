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

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from kitehooks import eventbridge
from kitehooks.deadline import Deadline
from kitehooks.eventbridge import EVENT_BUS, PUT_EVENTS_SECONDS, SOURCE, EventBridgePutEvents
from kitehooks.sessions.store import KiteSession, SessionStatus

logger = Logger(child=True)

__all__ = ["EVENT_BUS", "PUT_EVENTS_SECONDS", "SOURCE", "EventBridgePutEvents"]

SESSION_STARTED = "Kite session started"
SESSION_ENDED = "Kite session ended"
NOT_SENT_METRIC = "SessionEventNotSent"

EndReason = Literal["expired", "revoked", "token_invalid"]


@dataclass(frozen=True, slots=True)
class SessionEvent:
    detail_type: str
    detail: dict[str, str]

    def entry(self) -> dict[str, Any]:
        return eventbridge.entry(self.detail_type, self.detail)


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
        reason = eventbridge.put_one(self._client, self._deadline, event.entry())
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
