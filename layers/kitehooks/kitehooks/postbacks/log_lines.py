"""The postback path's log lines: one line per postback, which also counts it.

An accepted postback writes exactly one lean INFO line (message, service, correlation_id,
order_id, status, outcome, ~160 bytes). It is counted as ``PostbackEnqueued`` by a CloudWatch Logs
metric filter on the function's log group (``PostbackEnqueuedMetricFilter`` in template.yaml,
matching :data:`ENQUEUED_MESSAGE` and :data:`ENQUEUED_OUTCOME`), not by CloudWatch's embedded
metric format: the embedded metric alone takes ~200 bytes, more than the line itself, and logs
are the largest cost of a postback above the floor. The rarer outcomes (rejected, parked, lost)
keep their metric on their own line in the embedded format, so those counts, and the alarms on
them, never depend on a filter.

This departs from the usual ``@logger.inject_lambda_context`` + ``@metrics.log_metrics`` pair on
purpose: those write a log line repeating the function's name, ARN, memory and request id (all in
Lambda's own REPORT line and log stream already) and a second line for the metric, ~660 bytes per
postback, and they cost about half the warm request's own CPU. The rarer outcomes keep
Powertools' full line format, with their metric on the line too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.filters import SuppressFilter
from aws_lambda_powertools.logging.formatter import RESERVED_LOG_ATTRS, LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

logger = Logger(child=True)
# The same logger without Powertools' wrapper, for the two lines every request writes: its
# info()/warning() add ~45 µs a line (buffering and sampling checks this path does not use).
_lines = logging.getLogger(logger.name)
metrics = Metrics()
_METRICS_DISABLED = is_metrics_disabled()


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
        fields = {key: value for key, value in record.__dict__.items() if key not in self._NOT_FIELDS}
        return self.lean_line(record.msg, fields)

    def lean_line(self, message: object, fields: dict[str, Any]) -> str:
        """The lean INFO line: message, the service's keys, then ``fields``; None values left out."""
        line: dict[str, Any] = {"message": message}
        for key, value in self.log_format.items():
            if value is not None and key not in self._TEMPLATED:
                line[key] = value
        for key, value in fields.items():
            if value is not None:
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


# The fields of an accepted postback's line that the template's PostbackEnqueuedMetricFilter
# matches ({ $.message = "postback enqueued" && $.outcome = "queued" }); its dimension is the
# line's ``service``. tests/integration/test_postback_logging.py evaluates that pattern on a real line.
ENQUEUED_MESSAGE = "postback enqueued"
ENQUEUED_OUTCOME = "queued"
ENQUEUED_METRIC = "PostbackEnqueued"


def count_enqueued(about: dict[str, Any]) -> None:
    """The one line of an accepted postback, which the log group's metric filter counts as
    ``PostbackEnqueued``; no embedded metric on it (see the module's docstring).

    With INFO off (``LogLevel`` WARN or above) there is no line to filter, so the count is
    printed in the embedded format, as before. Lambda's level filter takes a line without a level
    for INFO, so under ``LogLevel=WARN`` CloudWatch keeps neither: PostbackEnqueued is counted at
    INFO and DEBUG only, as it was."""
    if _lines.isEnabledFor(logging.INFO):
        _info_line(ENQUEUED_MESSAGE, {**about, "outcome": ENQUEUED_OUTCOME})
    elif metric_fields := _metric(ENQUEUED_METRIC):
        print(json.dumps(metric_fields, separators=(",", ":")))


def _info_line(message: str, fields: dict[str, Any]) -> None:
    if _only_this_path_listens():
        # The same line the handler would write, without a LogRecord and the logging module's
        # locks, filters and handler calls: ~25 µs less CPU per warm request (~40 -> ~17 µs).
        stdout = sys.stdout
        stdout.write(_LOG_FORMATTER.lean_line(message, fields) + "\n")
        stdout.flush()
        return
    # Made and handled directly (no caller lookup): the lean INFO line has no location.
    _lines.handle(_lines.makeRecord(_lines.name, logging.INFO, "", 0, message, (), None, None, fields))


def _only_this_path_listens() -> bool:
    """Whether this path's handler is the only one a record of ``_lines`` would reach, as in
    Lambda (the runtime's root handler rejects the service's records with Powertools'
    SuppressFilter). Anything else listening (a test's capture, a handler a user added) gets
    the record through ``logging`` as usual. Checked per line: handlers come and go."""
    if _lines.filters or _LOG_HANDLER.filters or _LOG_HANDLER.formatter is not _LOG_FORMATTER:
        return False
    reached = 0
    current: logging.Logger | None = _lines
    while current is not None:
        for handler in current.handlers:
            if handler is _LOG_HANDLER:
                reached += 1
            elif not any(_suppresses(rule) for rule in handler.filters):
                return False
        current = current.parent if current.propagate else None
    return reached == 1 and _LOG_HANDLER.level <= logging.INFO


def _suppresses(rule: object) -> bool:
    return isinstance(rule, SuppressFilter) and rule.logger in _lines.name


def count_rejection(code: str, status_code: int, about: dict[str, Any]) -> None:
    """The one line of a refused request: its log line and its PostbackRejected metric, counted
    in total (for alarms) and by reason (to see what is being sent)."""
    fields = {**about, "reason": code, "status_code": status_code}
    line_with_metric(logging.WARNING, "postback rejected", fields, "PostbackRejected", code)


def line_with_metric(
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
        _info_line(message, {**fields, **metric_fields})
    else:
        _lines.log(level, message, extra={**fields, **metric_fields}, stacklevel=2)
