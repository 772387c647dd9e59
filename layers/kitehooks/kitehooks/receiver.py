"""Receiving one Kite postback: verify, then enqueue; park it when it cannot be enqueued.

This is the whole decision table of ``POST /postback``; the handler only translates HTTP.
A 2xx answer always means the postback is durably stored (in the queue, or parked in S3).

Every AWS call runs inside the invocation's :class:`~kitehooks.deadline.Deadline` and leaves
:data:`PARKING_RESERVE_SECONDS` for parking in S3, so the answer (and, when nothing could store
the postback, the ``PostbackLost`` metric and its CRITICAL log line) always comes before Lambda's
Timeout, whatever hangs.

Log lines and metrics: an accepted postback writes exactly one line, which is both its log line
(message, correlation_id, order_id, status, outcome) and its ``PostbackEnqueued`` metric in
CloudWatch's embedded metric format; a rejected one likewise writes one line with its
``PostbackRejected`` metric (counted in total and by reason). This departs from the usual
``@logger.inject_lambda_context`` + ``@metrics.log_metrics`` pair on purpose: those write a log line
repeating the function's name, ARN, memory and request id (all in Lambda's own REPORT line and log
stream already) and a second line for the metric, ~660 bytes per postback where one line of ~345
carries what a postback needs, and they cost about half the warm request's own CPU. The rarer outcomes
(parked, lost) keep Powertools' full line format, with their metric on the line too; only an
internal error's counts are left to the handler's metric flush.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, TextIO

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import RESERVED_LOG_ATTRS, LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

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
# The same logger without Powertools' wrapper, for the two lines every request writes: its
# info()/warning() add ~45 µs a line (buffering and sampling checks this path does not use).
_lines = logging.getLogger(logger.name)
metrics = Metrics()
_METRICS_DISABLED = is_metrics_disabled()

# Seconds kept back for parking the body in S3 when an earlier step fails: one attempt's
# connect and read timeouts (kitehooks.aws), and some room.
PARKING_RESERVE_SECONDS = 5.0
# The most one credentials read or one send may take: two attempts and their back-off.
SECRETS_READ_SECONDS = 7.0
QUEUE_SEND_SECONDS = 8.0
# Values from the request that reach a log line are cut to this many characters.
MAX_LOGGED_CHARS = 64


class PostbackLogFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON lines, with a lean INFO line for the one that every accepted postback writes.

    An INFO line holds its message, the service and the fields passed with it, nothing else: no
    level (Lambda counts a JSON line without one as INFO), no timestamp (Lambda stamps every line
    it receives), no location, no X-Ray trace id (Lambda's REPORT line carries it). Every other
    level keeps Powertools' full line, with an RFC 3339 timestamp: Lambda's log-level filter
    honours a line's level only when its timestamp is RFC 3339, and would otherwise count a
    CRITICAL line as INFO and drop it under ``LogLevel=WARN``.
    """

    _NOT_FIELDS = frozenset((*RESERVED_LOG_ATTRS, "message", "taskName"))
    _TEMPLATED = frozenset(("level", "location", "message", "timestamp"))

    def __init__(self, service: str) -> None:
        super().__init__(use_rfc3339=True, service=service)

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno != logging.INFO or record.exc_info or record.args:
            return super().format(record)
        line: dict[str, Any] = {"message": record.msg}
        for key, value in self.log_format.items():
            if value is not None and key not in self._TEMPLATED:
                line[key] = value
        for key, value in record.__dict__.items():
            if key not in self._NOT_FIELDS and value is not None:
                line[key] = value
        return json.dumps(line, separators=(",", ":"), default=str, ensure_ascii=False)


class _CurrentStdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each line to ``sys.stdout`` as it is at that moment, where ``print`` (and so
    Powertools' metric flush) writes, so log lines and metric lines always share one stream."""

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "service_undefined"
_LOG_FORMATTER = PostbackLogFormatter(SERVICE)
_LOG_HANDLER = _CurrentStdout()
_LOG_HANDLER.setFormatter(_LOG_FORMATTER)


def start_invocation() -> None:
    """Each invocation's lines start from the service's own keys only, as they did with
    ``inject_lambda_context(clear_state=True)``: nothing appended during one request (by code
    sharing the service's logger) reaches the next one's lines."""
    _LOG_FORMATTER.clear_state()


def use_postback_log_lines(service_logger: Logger) -> None:
    """Give the service's logger this path's handler and formatter, in place of Powertools' default.

    Lambda runs one function per interpreter, so this runs once, right after the function made its
    service logger; an interpreter that loads several functions (the tests) ends up with this one.
    """
    stdlib_logger = logging.getLogger(service_logger.service)
    for handler in list(stdlib_logger.handlers):
        if handler is not _LOG_HANDLER and handler is getattr(stdlib_logger, "powertools_handler", None):
            stdlib_logger.removeHandler(handler)
    if _LOG_HANDLER not in stdlib_logger.handlers:
        stdlib_logger.addHandler(_LOG_HANDLER)
    stdlib_logger.powertools_handler = _LOG_HANDLER  # type: ignore[attr-defined]
    service_logger.logger_handler = _LOG_HANDLER


def _metric(name: str, reason: str | None = None) -> dict[str, Any]:
    """The fields that make a log line also carry one count of ``name`` (CloudWatch's embedded
    metric format), under the ``service`` dimension as Powertools' metrics are, and under
    ``service`` + ``reason`` as well when a reason is given."""
    if _METRICS_DISABLED:
        return {}
    dimensions = [["service"], ["service", "reason"]] if reason is not None else [["service"]]
    fields: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": metrics.namespace,
                    "Dimensions": dimensions,
                    "Metrics": [{"Name": name, "Unit": "Count"}],
                }
            ],
        },
        "service": SERVICE,
        name: 1,
    }
    if reason is not None:
        fields["reason"] = reason
    return fields


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to answer Kite: an HTTP status and a JSON body that holds no secret."""

    status_code: int
    body: dict[str, Any] = field(default_factory=dict)


class PostbackReceiver:
    def __init__(self, settings: PostbackSettings, credentials: CredentialsStore) -> None:
        self._settings = settings
        self._credentials = credentials

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

        # The one line of an accepted postback: its log line and its PostbackEnqueued metric.
        # (SQS's MessageId is left out: the deduplication id, sha256 of the body, finds the message.)
        _line_with_metric(
            logging.INFO, "postback enqueued", {**about, "outcome": "queued"}, "PostbackEnqueued"
        )
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
            _line_with_metric(
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
            _line_with_metric(
                logging.CRITICAL,
                "postback could not be stored anywhere",
                {**about, "reason": str(error) or "S3 did not answer in time"},
                "PostbackLost",
            )
            return Outcome(503, {"status": "error", "reason": "postback could not be stored; try again"})

        # Verified: a genuine update is waiting for `make redrive` (the alarm's meaning).
        # Unverified: it could not be checked at all, which is a fault of its own to fix first.
        parked_metric = "PostbackParked" if verification == "verified" else "PostbackParkedUnverified"
        _line_with_metric(
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


def count_rejection(code: str, status_code: int, about: dict[str, Any]) -> None:
    """The one line of a refused request: its log line and its PostbackRejected metric, counted
    in total (for alarms) and by reason (to see what is being sent)."""
    fields = {**about, "reason": code, "status_code": status_code}
    _line_with_metric(logging.WARNING, "postback rejected", fields, "PostbackRejected", code)


def _line_with_metric(
    level: int, message: str, fields: dict[str, Any], metric: str, reason: str | None = None
) -> None:
    """One line that is both a log line and one count of ``metric``; below the log level, the
    metric alone, as Powertools' flush would print it, so the count never depends on the level.

    Lambda's log-level filter counts a JSON line without a level as INFO, so a metric line of its
    own would be dropped under ``LogLevel=WARN``; on its WARNING or CRITICAL line it is kept, and
    the alarms on PostbackParked and PostbackLost keep working whatever the level."""
    metric_fields = _metric(metric, reason)
    if not _lines.isEnabledFor(level):
        if metric_fields:
            print(json.dumps(metric_fields, separators=(",", ":")))
    elif level == logging.INFO:
        # Made and handled directly (no caller lookup): the lean INFO line has no location.
        record = _lines.makeRecord(
            _lines.name, level, "", 0, message, (), None, None, {**fields, **metric_fields}
        )
        _lines.handle(record)
    else:
        _lines.log(level, message, extra={**fields, **metric_fields}, stacklevel=2)


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
        _line_with_metric(logging.ERROR, "function is misconfigured", fields, "PostbackLost")
        return Outcome(503, {"status": "error", "reason": f"kitehooks is misconfigured: {error}"})
    try:
        return current.receive(body, request_id, deadline, received_at)
    except Exception:
        logger.exception("unexpected error while receiving a postback", extra={"correlation_id": request_id})
        return current.park_after_unexpected_error(body, request_id, deadline, received_at)
