"""Receiving one Kite postback: verify, then enqueue; park it when it cannot be enqueued.

This is the whole decision table of ``POST /postback``; the handler only translates HTTP.
A 2xx answer always means the postback is durably stored (in the queue, or parked in S3).

Every AWS call runs inside the invocation's :class:`~kitehooks.deadline.Deadline` and leaves
:data:`PARKING_RESERVE_SECONDS` for parking in S3, so the answer (and, when nothing could store
the postback, the ``PostbackLost`` metric and its CRITICAL log line) always comes before Lambda's
Timeout, whatever hangs.

Each outcome writes one line that carries its metric, or (an accepted postback) that the log
group's metric filter counts (:mod:`kitehooks.postbacks.log_lines` says why); only an internal
error's counts are left to the handler's metric flush.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from kitehooks import aws
from kitehooks.config import ConfigurationError, PostbackSettings, credentials_settings, postback_settings
from kitehooks.credentials import CredentialsStore, CredentialsUnavailable, credentials_store
from kitehooks.deadline import Deadline, DeadlineExceeded
from kitehooks.orders import queue
from kitehooks.orders.ledger import LedgerUnavailable, OrderLedger
from kitehooks.postbacks import undelivered
from kitehooks.postbacks.log_lines import count_enqueued, count_rejection, line_with_metric, metrics
from kitehooks.postbacks.postback import (
    PostbackRejected,
    SignedPostback,
    VerifiedPostback,
    parse_postback,
    verify_postback,
)

logger = Logger(child=True)

# Seconds kept back for parking the body in S3 when an earlier step fails: one attempt's
# connect and read timeouts (kitehooks.aws), and some room.
PARKING_RESERVE_SECONDS = 5.0
# The most one credentials read or one send may take: two attempts and their back-off.
SECRETS_READ_SECONDS = 7.0
QUEUE_SEND_SECONDS = 8.0
# The ledger write comes after the queue took the postback, so it can never cost an update: it
# gets one attempt's timeouts and must leave the answer's margin.
LEDGER_WRITE_SECONDS = 4.0
# Values from the request that reach a log line are cut to this many characters.
MAX_LOGGED_CHARS = 64


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to answer Kite: an HTTP status and a JSON body that holds no secret."""

    status_code: int
    body: dict[str, Any] = field(default_factory=dict)


class PostbackReceiver:
    def __init__(self, settings: PostbackSettings, credentials: CredentialsStore) -> None:
        self._settings = settings
        self._credentials = credentials
        table = settings.order_ledger_table
        self._ledger = OrderLedger(aws.dynamodb_client(), table) if table else None

    def _api_secret(self, deadline: Deadline) -> str:
        # Fresh credentials in the store need no I/O, so no time limit (its timer costs system
        # calls on every warm request); a read, when due, is bounded.
        credentials = self._credentials.cached()
        if credentials is None:
            with deadline.limit(SECRETS_READ_SECONDS, keep=PARKING_RESERVE_SECONDS):
                credentials = self._credentials.get()
        return credentials.api_secret

    @classmethod
    def from_environment(cls) -> PostbackReceiver:
        credentials = credentials_settings()
        return cls(postback_settings(), credentials_store(credentials.secret_id, credentials.cache_seconds))

    def receive(self, body: bytes, request_id: str, deadline: Deadline, received_at: datetime) -> Outcome:
        try:
            signed = parse_postback(body, self._settings.max_postback_bytes)
        except PostbackRejected as rejection:
            return _rejected(rejection, {"correlation_id": request_id})
        # On every line about this postback (passed per line: no state survives the request).
        about = {"correlation_id": request_id, "order_id": signed.order_id, "status": _logged(signed.status)}

        try:
            api_secret = self._api_secret(deadline)
        except (CredentialsUnavailable, DeadlineExceeded) as error:
            reason = str(error) or "Secrets Manager did not answer in time"
            logger.error("cannot verify postback: credentials unavailable", extra={**about, "reason": reason})
            return self._park(
                signed.raw_body,
                "unverified",
                "credentials-unavailable",
                signed,
                request_id,
                deadline,
                about,
                received_at,
            )

        try:
            verified = self._verify(signed, api_secret, deadline)
        except PostbackRejected as rejection:
            self._quarantine(signed, request_id, deadline, about, received_at)
            return _rejected(rejection, about)

        try:
            with deadline.limit(QUEUE_SEND_SECONDS, keep=PARKING_RESERVE_SECONDS):
                queue.publish(aws.sqs_client(), self._settings.queue_url, verified)
        except (queue.QueueUnavailable, DeadlineExceeded) as error:
            reason = str(error) or "SQS did not answer in time"
            logger.error("queue unavailable; parking verified postback", extra={**about, "reason": reason})
            return self._park(
                verified.raw_body,
                "verified",
                "queue-unavailable",
                signed,
                request_id,
                deadline,
                about,
                received_at,
            )

        if self._ledger is not None:
            self._record(self._ledger, verified, deadline, about, received_at)

        # The one line of an accepted postback, counted as PostbackEnqueued by a metric filter.
        # (SQS's MessageId is left out: the deduplication id, sha256 of the order state, finds the message.)
        count_enqueued(about)
        return Outcome(200, {"status": "queued", "order_id": verified.order_id})

    @staticmethod
    def _record(
        ledger: OrderLedger,
        verified: VerifiedPostback,
        deadline: Deadline,
        about: dict[str, Any],
        received_at: datetime,
    ) -> None:
        """Record the queued state and its claim for the reconciler (OrderConfirmation=on).
        The postback is already on the queue, so a failure here costs no update: it is logged and
        counted, the answer stays 200, and the reconciler treats the state as never delivered (at
        worst it sends it once more; consumers are idempotent on the order state)."""
        try:
            with deadline.limit(LEDGER_WRITE_SECONDS):
                ledger.record_postback(verified, received_at)
        except (LedgerUnavailable, DeadlineExceeded) as error:
            line_with_metric(
                logging.WARNING,
                "order state not recorded in the ledger",
                {**about, "reason": str(error) or "DynamoDB did not answer in time"},
                "OrderStateNotRecorded",
            )

    def _verify(self, signed: SignedPostback, api_secret: str, deadline: Deadline) -> VerifiedPostback:
        try:
            return verify_postback(signed, api_secret)
        except PostbackRejected:
            # The secret may have been rotated since it was cached: read it again (rate-limited)
            # before turning away what could be a genuine update that Kite will never resend.
            try:
                with deadline.limit(SECRETS_READ_SECONDS, keep=PARKING_RESERVE_SECONDS):
                    fresh = self._credentials.refresh()
            except (CredentialsUnavailable, DeadlineExceeded):
                fresh = None
            if fresh is None or fresh.api_secret == api_secret:
                raise
            return verify_postback(signed, fresh.api_secret)

    def _quarantine(
        self,
        signed: SignedPostback,
        request_id: str,
        deadline: Deadline,
        about: dict[str, Any],
        received_at: datetime,
    ) -> None:
        """Keep a postback whose checksum failed: if Kite's api_secret was regenerated before
        Secrets Manager got the new one, this is a genuine update that Kite will never resend.
        Bounded: the body is within ``MaxPostbackBytes`` and the folder expires by lifecycle rule."""
        try:
            # Capped: a copy of what is most likely junk is not worth holding the function for.
            with deadline.limit(PARKING_RESERVE_SECONDS):
                undelivered.park(
                    aws.s3_client(),
                    self._settings.undelivered_bucket,
                    signed.raw_body,
                    "rejected",
                    "checksum-mismatch",
                    signed.order_id,
                    request_id,
                    received_at,
                )
        except (undelivered.ParkingFailed, DeadlineExceeded) as error:
            logger.warning(
                "rejected postback not kept", extra={**about, "reason": str(error) or "S3 timed out"}
            )

    def park_after_unexpected_error(
        self, body: bytes, request_id: str, deadline: Deadline, received_at: datetime
    ) -> Outcome:
        """Last resort for a bug: keep the body (as unverified, so redrive checks it) and say 503."""
        try:
            with deadline.limit():
                undelivered.park(
                    aws.s3_client(),
                    self._settings.undelivered_bucket,
                    body,
                    "unverified",
                    "internal-error",
                    "unknown",
                    request_id,
                    received_at,
                )
        except (undelivered.ParkingFailed, DeadlineExceeded):
            line_with_metric(
                logging.CRITICAL,
                "postback could not be stored after an internal error",
                {"correlation_id": request_id},
                "PostbackLost",
            )
        else:
            metrics.add_metric(name="PostbackParkedUnverified", unit=MetricUnit.Count, value=1)
        # Handled, so Lambda's Errors metric will not count it: this one feeds the alarm.
        metrics.add_metric(name="PostbackInternalError", unit=MetricUnit.Count, value=1)
        return Outcome(503, {"status": "error", "reason": "internal error; try again"})

    def _park(
        self,
        raw_body: str,
        verification: undelivered.Verification,
        reason: str,
        signed: SignedPostback,
        request_id: str,
        deadline: Deadline,
        about: dict[str, Any],
        received_at: datetime,
    ) -> Outcome:
        try:
            with deadline.limit():
                key = undelivered.park(
                    aws.s3_client(),
                    self._settings.undelivered_bucket,
                    raw_body,
                    verification,
                    reason,
                    signed.order_id,
                    request_id,
                    received_at,
                )
        except (undelivered.ParkingFailed, DeadlineExceeded) as error:
            line_with_metric(
                logging.CRITICAL,
                "postback could not be stored anywhere",
                {**about, "reason": str(error) or "S3 did not answer in time"},
                "PostbackLost",
            )
            return Outcome(503, {"status": "error", "reason": "postback could not be stored; try again"})

        # Verified: a genuine update is waiting for `make redrive` (the alarm's meaning).
        # Unverified: it could not be checked at all, which is a fault of its own to fix first.
        parked_metric = "PostbackParked" if verification == "verified" else "PostbackParkedUnverified"
        line_with_metric(
            logging.WARNING,
            "postback parked",
            {**about, "key": key, "verification": verification},
            parked_metric,
        )
        if verification == "unverified":
            # Stored, but not accepted: we could not tell whether it is genuine.
            return Outcome(
                503,
                {
                    "status": "error",
                    "reason": "credentials unavailable; postback stored unverified for redelivery",
                    "order_id": signed.order_id,
                },
            )
        return Outcome(
            202,
            {
                "status": "parked",
                "reason": "queue unavailable; stored for redelivery",
                "order_id": signed.order_id,
            },
        )


def _logged(value: str | None) -> str | None:
    """A status from the request as logged: Kite's statuses are a few ASCII capitals and spaces
    ("OPEN", "TRIGGER PENDING"); anything else is cut to a short ASCII stand-in, because a JSON
    log line escapes each non-ASCII character to as many as 12 bytes."""
    if value is None or (len(value) <= MAX_LOGGED_CHARS and value.isascii() and value.isprintable()):
        return value
    return value[:MAX_LOGGED_CHARS].encode("ascii", "replace").decode("ascii") + "..."


def _rejected(rejection: PostbackRejected, about: dict[str, Any]) -> Outcome:
    count_rejection(rejection.code, rejection.status_code, about)
    return Outcome(rejection.status_code, {"status": "rejected", "reason": rejection.reason})


@cache
def receiver() -> PostbackReceiver:
    """One receiver per container, built on first use so a missing setting is a clear 503."""
    return PostbackReceiver.from_environment()


def receive(body: bytes, request_id: str, deadline: Deadline, received_at: datetime) -> Outcome:
    """``received_at``: when API Gateway received the request, the time parked copies are kept
    under, so redrive keeps Kite's order even when one invocation waited longer than the next."""
    try:
        current = receiver()
    except ConfigurationError as error:
        fields = {"correlation_id": request_id, "reason": str(error)}
        line_with_metric(logging.ERROR, "function is misconfigured", fields, "PostbackLost")
        return Outcome(503, {"status": "error", "reason": f"kitehooks is misconfigured: {error}"})
    try:
        return current.receive(body, request_id, deadline, received_at)
    except Exception:
        logger.exception("unexpected error while receiving a postback", extra={"correlation_id": request_id})
        return current.park_after_unexpected_error(body, request_id, deadline, received_at)
