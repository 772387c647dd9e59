"""Receiving one Kite postback: verify, then enqueue; park it when it cannot be enqueued.

This is the whole decision table of ``POST /postback``; the handler only translates HTTP.
A 2xx answer always means the postback is durably stored (in the queue, or parked in S3).

Every AWS call runs inside the invocation's :class:`~kitehooks.deadline.Deadline` and leaves
:data:`PARKING_RESERVE_SECONDS` for parking in S3, so the answer (and, when nothing could store
the postback, the ``PostbackLost`` metric and its CRITICAL log line) always comes before Lambda's
Timeout, whatever hangs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from kitehooks import aws, queue, undelivered
from kitehooks.config import ConfigurationError, PostbackSettings, credentials_settings, postback_settings
from kitehooks.credentials import CredentialsStore, CredentialsUnavailable, credentials_store
from kitehooks.deadline import Deadline, DeadlineExceeded
from kitehooks.postback import (
    PostbackRejected,
    SignedPostback,
    VerifiedPostback,
    parse_postback,
    verify_postback,
)

logger = Logger(child=True)
metrics = Metrics()

# Seconds kept back for parking the body in S3 when an earlier step fails: one attempt's
# connect and read timeouts (kitehooks.aws), and some room.
PARKING_RESERVE_SECONDS = 5.0
# The most one credentials read or one send may take: two attempts and their back-off.
SECRETS_READ_SECONDS = 7.0
QUEUE_SEND_SECONDS = 8.0
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

    @classmethod
    def from_environment(cls) -> PostbackReceiver:
        credentials = credentials_settings()
        return cls(postback_settings(), credentials_store(credentials.secret_id, credentials.cache_seconds))

    def receive(self, body: bytes, request_id: str, deadline: Deadline) -> Outcome:
        try:
            signed = parse_postback(body, self._settings.max_postback_bytes)
        except PostbackRejected as rejection:
            return _rejected(rejection)
        logger.append_keys(order_id=signed.order_id, order_status=_logged(signed.status))

        try:
            with deadline.limit(SECRETS_READ_SECONDS, keep=PARKING_RESERVE_SECONDS):
                api_secret = self._credentials.get().api_secret
        except (CredentialsUnavailable, DeadlineExceeded) as error:
            reason = str(error) or "Secrets Manager did not answer in time"
            logger.error("cannot verify postback: credentials unavailable", extra={"reason": reason})
            return self._park(
                signed.raw_body, "unverified", "credentials-unavailable", signed, request_id, deadline
            )

        try:
            verified = self._verify(signed, api_secret, deadline)
        except PostbackRejected as rejection:
            self._quarantine(signed, request_id, deadline)
            return _rejected(rejection)

        try:
            with deadline.limit(QUEUE_SEND_SECONDS, keep=PARKING_RESERVE_SECONDS):
                message_id = queue.publish(aws.sqs_client(), self._settings.queue_url, verified)
        except (queue.QueueUnavailable, DeadlineExceeded) as error:
            reason = str(error) or "SQS did not answer in time"
            logger.error("queue unavailable; parking verified postback", extra={"reason": reason})
            return self._park(
                verified.raw_body, "verified", "queue-unavailable", signed, request_id, deadline
            )

        metrics.add_metric(name="PostbackEnqueued", unit=MetricUnit.Count, value=1)
        logger.info("postback enqueued", extra={"message_id": message_id})
        return Outcome(200, {"status": "queued", "order_id": verified.order_id})

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

    def _quarantine(self, signed: SignedPostback, request_id: str, deadline: Deadline) -> None:
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
                )
        except (undelivered.ParkingFailed, DeadlineExceeded) as error:
            logger.warning("rejected postback not kept", extra={"reason": str(error) or "S3 timed out"})

    def park_after_unexpected_error(self, body: bytes, request_id: str, deadline: Deadline) -> Outcome:
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
                )
        except (undelivered.ParkingFailed, DeadlineExceeded):
            metrics.add_metric(name="PostbackLost", unit=MetricUnit.Count, value=1)
            logger.critical("postback could not be stored after an internal error")
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
                )
        except (undelivered.ParkingFailed, DeadlineExceeded) as error:
            metrics.add_metric(name="PostbackLost", unit=MetricUnit.Count, value=1)
            logger.critical(
                "postback could not be stored anywhere",
                extra={"reason": str(error) or "S3 did not answer in time"},
            )
            return Outcome(503, {"status": "error", "reason": "postback could not be stored; try again"})

        # Verified: a genuine update is waiting for `make redrive` (the alarm's meaning).
        # Unverified: it could not be checked at all, which is a fault of its own to fix first.
        parked_metric = "PostbackParked" if verification == "verified" else "PostbackParkedUnverified"
        metrics.add_metric(name=parked_metric, unit=MetricUnit.Count, value=1)
        logger.warning("postback parked", extra={"key": key, "verification": verification})
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


def count_rejection(code: str) -> None:
    # One count in total (for alarms) and one by reason (to see what is being sent).
    metrics.add_metric(name="PostbackRejected", unit=MetricUnit.Count, value=1)
    with single_metric(
        name="PostbackRejected", unit=MetricUnit.Count, value=1, namespace=metrics.namespace
    ) as metric:
        metric.add_dimension(name="reason", value=code)


def _logged(value: str | None) -> str | None:
    """A value from the request, cut short enough that junk cannot inflate the logs."""
    return value if value is None or len(value) <= MAX_LOGGED_CHARS else value[:MAX_LOGGED_CHARS] + "…"


def _rejected(rejection: PostbackRejected) -> Outcome:
    count_rejection(rejection.code)
    logger.warning(
        "postback rejected", extra={"reason": rejection.code, "status_code": rejection.status_code}
    )
    return Outcome(rejection.status_code, {"status": "rejected", "reason": rejection.reason})


@cache
def receiver() -> PostbackReceiver:
    """One receiver per container, built on first use so a missing setting is a clear 503."""
    return PostbackReceiver.from_environment()


def receive(body: bytes, request_id: str, deadline: Deadline) -> Outcome:
    try:
        current = receiver()
    except ConfigurationError as error:
        metrics.add_metric(name="PostbackLost", unit=MetricUnit.Count, value=1)
        logger.error("function is misconfigured", extra={"reason": str(error)})
        return Outcome(503, {"status": "error", "reason": f"kitehooks is misconfigured: {error}"})
    try:
        return current.receive(body, request_id, deadline)
    except Exception:
        logger.exception("unexpected error while receiving a postback")
        return current.park_after_unexpected_error(body, request_id, deadline)
