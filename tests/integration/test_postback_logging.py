"""What the postback function writes to its log per request, measured as Lambda would see it.

Each case runs the real handler in a fresh interpreter (tests/lambda_child.py, as Lambda runs it)
against a moto server, and looks at every line the function writes: those lines are what
CloudWatch Logs ingests and bills, and the metric lines among them are the function's metrics.

PostbackEnqueued is counted by a CloudWatch Logs metric filter in template.yaml, which the local
stack does not run. So these tests evaluate the template's own filter pattern on the real lines
(:func:`filter_matches`, CloudWatch's JSON pattern syntax): a filter that stopped matching the
accepted line, or that matched another one, fails here rather than silently in AWS.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import subprocess
import tempfile
from collections.abc import Iterable
from functools import cache
from typing import Any

import pytest
from aws_lambda_powertools.logging.filters import SuppressFilter

from local.gateway import load_template
from local.provision import ResourceValues
from local.samples import http_api_event, postback_body
from tests.conftest import (
    TEMPLATE,
    TEST_API_SECRET,
    FakeLambdaContext,
    closed_port,
    lambda_child_command,
    lambda_child_environment,
    load_function,
    reset_layer_caches,
)

# The accepted line's budget at the template's default level (issue 11's goal), with Kite's usual
# order id (15 digits), status and API Gateway request id (16 characters). The line is ~150 bytes:
# its metric is the log group's filter, not ~200 bytes of embedded metric on the line.
ACCEPTED_LINE_BUDGET = 300
REQUEST_ID = "JjpPHjiyBcwEM2w="


# --------------------------------------------------------------------------------------------
# CloudWatch Logs' JSON filter patterns, as far as template.yaml uses them


_TOKEN = re.compile(
    r"""\s*(?:(?P<group>[{}()])|(?P<logic>&&|\|\|)|(?P<op>!=|<=|>=|=|<|>)"""
    r'|(?P<selector>\$(?:\.[A-Za-z_][\w-]*|\[\d+\])+)|"(?P<string>(?:[^"\\]|\\.)*)"'
    r"""|(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<word>[A-Za-z_*][\w*.-]*))"""
)
_MISSING = object()


class UnsupportedFilterPattern(ValueError):
    """A pattern (or part of one) this reader does not know: the test fails rather than guess."""


def _tokens(pattern: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(pattern.rstrip()):
        match = _TOKEN.match(pattern, position)
        if match is None or match.lastgroup is None:
            raise UnsupportedFilterPattern(f"unsupported filter pattern at {pattern[position:]!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    return tokens


def _select(record: Any, selector: str) -> Any:
    for name, index in re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", selector):
        if name and isinstance(record, dict) and name in record:
            record = record[name]
        elif index and isinstance(record, list) and int(index) < len(record):
            record = record[int(index)]
        else:
            return _MISSING
    return record


def _compare(value: Any, op: str, kind: str, literal: str) -> bool:
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        number = float(literal)
        return {
            "=": value == number, "!=": value != number, "<": value < number,
            ">": value > number, "<=": value <= number, ">=": value >= number,
        }[op]  # fmt: skip
    if op not in ("=", "!="):
        raise UnsupportedFilterPattern(f"{op} compares numbers only")
    text = literal.replace('\\"', '"') if kind == "string" else literal
    # CloudWatch: a string value matches exactly, except that * matches any characters.
    matched = isinstance(value, str) and fnmatch.fnmatchcase(value, text.replace("[", "[[]"))
    return matched if op == "=" else (isinstance(value, str) and not matched)


def filter_matches(pattern: str, record: dict[str, Any]) -> bool:
    """Whether a CloudWatch Logs JSON filter pattern (``{ $.a = "x" && ($.b > 1 || $.c != "y") }``)
    matches one JSON log line. Raises UnsupportedFilterPattern on syntax it does not know, so a pattern it
    cannot judge fails the test rather than passing it."""
    tokens = _tokens(pattern)
    if not tokens or tokens[0] != ("group", "{") or tokens[-1] != ("group", "}"):
        raise UnsupportedFilterPattern(f"not a JSON filter pattern: {pattern!r}")
    position = 1

    def take() -> tuple[str, str]:
        nonlocal position
        if position >= len(tokens) - 1:
            raise UnsupportedFilterPattern(f"filter pattern ends early: {pattern!r}")
        position += 1
        return tokens[position - 1]

    def term() -> bool:
        kind, text = take()
        if (kind, text) == ("group", "("):
            result = either()
            if take() != ("group", ")"):
                raise UnsupportedFilterPattern(f"unbalanced parentheses in {pattern!r}")
            return result
        if kind != "selector":
            raise UnsupportedFilterPattern(f"expected a $. selector, got {text!r} in {pattern!r}")
        op_kind, op = take()
        value_kind, literal = take()
        if op_kind != "op" or value_kind not in ("string", "number", "word"):
            raise UnsupportedFilterPattern(f"unsupported comparison {op!r} {literal!r} in {pattern!r}")
        return _compare(_select(record, text), op, value_kind, literal)

    def both() -> bool:
        result = term()
        while position < len(tokens) - 1 and tokens[position] == ("logic", "&&"):
            take()
            result = term() and result
        return result

    def either() -> bool:
        result = both()
        while position < len(tokens) - 1 and tokens[position] == ("logic", "||"):
            take()
            result = both() or result
        return result

    result = either()
    if position != len(tokens) - 1:
        raise UnsupportedFilterPattern(f"unexpected {tokens[position][1]!r} in {pattern!r}")
    return result


@cache
def postback_metric_filters() -> tuple[dict[str, Any], ...]:
    """template.yaml's metric filters on the postback function's log group."""
    resources = load_template(TEMPLATE)["Resources"]
    log_group = resources["PostbackFunctionLogs"]["Properties"]["LogGroupName"]
    assert log_group == {"Fn::Sub": "/aws/lambda/${PostbackFunction}"}
    return tuple(
        resource["Properties"]
        for resource in resources.values()
        if resource["Type"] == "AWS::Logs::MetricFilter"
        and resource["Properties"]["LogGroupName"] == {"Ref": "PostbackFunctionLogs"}
    )


def counted_metrics(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """Metric name -> one entry per count those lines make in CloudWatch (its dimensions): from
    the embedded metric format on a line, and from the template's metric filters on the postback
    function's log group."""
    counts: dict[str, list[dict[str, str]]] = {}
    for record in records:
        for directive in record.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive["Metrics"]:
                for dimension_set in directive["Dimensions"]:
                    dimensions = {name: record[name] for name in dimension_set}
                    counts.setdefault(metric["Name"], []).append(dimensions)
        for metric_filter in postback_metric_filters():
            if filter_matches(metric_filter["FilterPattern"], record):
                for transformation in metric_filter["MetricTransformations"]:
                    dimensions = {
                        dimension["Key"]: _select(record, dimension["Value"])
                        for dimension in transformation.get("Dimensions", [])
                    }
                    counts.setdefault(transformation["MetricName"], []).append(dimensions)
    return counts


# --------------------------------------------------------------------------------------------
# The function's lines


def _run(
    stack: ResourceValues, moto: str, body: bytes, log_level: str = "INFO", **endpoints: str
) -> list[str]:
    """The function's output lines for one invocation (the child's RESULT line left out)."""
    environment = lambda_child_environment(
        moto,
        # As template.yaml sets them for every function, LogLevel at its default unless given.
        POWERTOOLS_LOG_LEVEL=log_level,
        AWS_LAMBDA_LOG_LEVEL=log_level,
        # Lambda sets this when Tracing is Active: the lean line must not repeat it.
        _X_AMZN_TRACE_ID="Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        ORDER_UPDATES_QUEUE_URL=stack["OrderUpdatesQueue"]["Ref"],
        UNDELIVERED_BUCKET=stack["UndeliveredPostbacksBucket"]["Ref"],
        API_CREDENTIALS_SECRET_ID=stack["ApiCredentialsSecret"]["Ref"],
        **endpoints,
    )
    event = http_api_event("POST", "/postback", body, request_id=REQUEST_ID)
    with tempfile.TemporaryFile("w+") as event_file:
        json.dump(event, event_file)
        event_file.seek(0)
        finished = subprocess.run(
            lambda_child_command("postback", 28),
            stdin=event_file,
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
            check=True,
        )
    assert finished.stderr == "", finished.stderr  # nothing but the lines below reaches the log
    return [line for line in finished.stdout.splitlines() if not line.startswith("RESULT ")]


def _metrics(line: dict[str, Any]) -> dict[str, list[list[str]]]:
    """Metric name -> its dimension sets, from one embedded-metric-format line."""
    return {
        metric["Name"]: directive["Dimensions"]
        for directive in line["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
        if directive["Namespace"] == "kitehooks"
    }


def test_an_accepted_postback_writes_one_lean_line_that_the_template_counts(
    stack: ResourceValues, moto_endpoint: str
) -> None:
    [line] = _run(stack, moto_endpoint, postback_body(TEST_API_SECRET))
    assert len(line.encode()) + 1 <= ACCEPTED_LINE_BUDGET, f"{len(line.encode()) + 1} bytes: {line}"
    record = json.loads(line)
    assert record["message"] == "postback enqueued"
    assert (record["order_id"], record["status"], record["outcome"]) == (
        "220303000308932",
        "COMPLETE",
        "queued",
    )
    assert (record["correlation_id"], record["service"]) == (REQUEST_ID, "kitehooks")
    # Lambda's own records say these already: the line does not repeat them.
    for repeated in ("function_arn", "function_name", "function_request_id", "cold_start", "xray_trace_id"):
        assert repeated not in record
    # No embedded metric: the log group's metric filter counts the line, once, under `service`
    # as the embedded metric was (the alarms and dashboards keep their metric).
    assert "_aws" not in record
    assert counted_metrics([record]) == {"PostbackEnqueued": [{"service": "kitehooks"}]}
    [enqueued] = [
        f
        for f in postback_metric_filters()
        if f["MetricTransformations"][0]["MetricName"] == "PostbackEnqueued"
    ]
    assert enqueued["MetricTransformations"] == [
        {
            "MetricNamespace": "kitehooks",
            "MetricName": "PostbackEnqueued",
            "MetricValue": "1",
            "Unit": "Count",
            "Dimensions": [{"Key": "service", "Value": "$.service"}],
        }
    ]
    # The same line with another outcome, message or no outcome is not counted.
    for changed in ({"outcome": "parked"}, {"message": "postback parked"}, {"outcome": None}):
        other = {key: value for key, value in {**record, **changed}.items() if value is not None}
        assert counted_metrics([other]) == {}


def test_the_filter_pattern_reader_matches_as_cloudwatch_does() -> None:
    """The reader the tests above rely on: exact strings, * wildcards, numbers, && before ||,
    parentheses, missing fields; and it refuses what it does not know rather than guess."""
    line = {"message": "postback enqueued", "outcome": "queued", "status_code": 403, "about": {"n": [1, 2]}}
    assert filter_matches('{ $.outcome = "queued" }', line)
    assert not filter_matches('{ $.outcome = "queue" }', line)
    assert not filter_matches('{ $.outcome = "QUEUED" }', line)
    assert filter_matches('{ $.message = "postback *" && $.outcome = queued }', line)
    assert not filter_matches('{ $.message = "postback *" && $.outcome != "queued" }', line)
    assert not filter_matches('{ $.missing = "queued" }', line)
    assert not filter_matches('{ $.missing != "queued" }', line)
    assert filter_matches("{ $.status_code >= 400 && $.status_code < 500 }", line)
    assert not filter_matches('{ $.status_code = "403" }', line)
    assert filter_matches("{ $.about.n[1] = 2 }", line)
    assert filter_matches('{ $.outcome = "parked" || $.status_code = 403 && $.outcome = "queued" }', line)
    assert not filter_matches('{ ($.outcome = "parked" || $.status_code = 403) && $.x = "y" }', line)
    for unknown in ('$.outcome = "queued"', "{ $.outcome IS NULL }", '{ $.outcome = "queued" ', "{ }"):
        with pytest.raises(UnsupportedFilterPattern):
            filter_matches(unknown, line)


def test_a_forged_postback_writes_one_warning_line_counted_in_total_and_by_reason(
    stack: ResourceValues, moto_endpoint: str
) -> None:
    forged = postback_body("not-the-api-secret")
    [line] = _run(stack, moto_endpoint, forged)
    record = json.loads(line)
    assert (record["message"], record["level"]) == ("postback rejected", "WARNING")
    assert (record["reason"], record["status_code"], record["order_id"]) == (
        "checksum_mismatch",
        403,
        "220303000308932",
    )
    # Lambda honours a line's level only with an RFC 3339 timestamp (else it counts it as INFO).
    assert record["timestamp"][10] == "T"
    # One datum, published both under service (the alarm's) and under service + reason; no
    # metric filter counts the line as anything else.
    assert _metrics(record) == {"PostbackRejected": [["service"], ["service", "reason"]]}
    assert record["PostbackRejected"] == 1
    assert counted_metrics([record]) == {
        "PostbackRejected": [
            {"service": "kitehooks"},
            {"service": "kitehooks", "reason": "checksum_mismatch"},
        ]
    }
    assert json.loads(forged)["checksum"] not in line
    assert TEST_API_SECRET not in line


@pytest.mark.parametrize("log_level", ["WARN", "ERROR"])
def test_above_info_the_accepted_line_is_dropped_but_its_metric_still_counts(
    stack: ResourceValues, moto_endpoint: str, log_level: str
) -> None:
    [line] = _run(stack, moto_endpoint, postback_body(TEST_API_SECRET), log_level=log_level)
    record = json.loads(line)
    assert "message" not in record
    # With no INFO line for the filter, the count is printed in the embedded format, and not
    # counted twice (the filter does not match the metric line).
    assert _metrics(record) == {"PostbackEnqueued": [["service"]]}
    assert record["PostbackEnqueued"] == 1
    assert counted_metrics([record]) == {"PostbackEnqueued": [{"service": "kitehooks"}]}


def test_under_log_level_warn_a_parked_postback_still_counts_on_its_warning_line(
    stack: ResourceValues, moto_endpoint: str
) -> None:
    """Lambda's level filter counts a line without a level as INFO: a metric line of its own would
    be dropped under WARN, and the PostbackParked alarm with it. On the warning line it stays."""
    sqs_down = f"http://127.0.0.1:{closed_port()}"
    lines = _run(stack, moto_endpoint, postback_body(TEST_API_SECRET), "WARN", AWS_ENDPOINT_URL_SQS=sqs_down)
    records = [json.loads(line) for line in lines]
    [parked] = [record for record in records if record.get("message") == "postback parked"]
    assert (parked["level"], parked["verification"]) == ("WARNING", "verified")
    assert parked["timestamp"][10] == "T"
    assert _metrics(parked) == {"PostbackParked": [["service"]]}
    assert all("level" in record for record in records)  # no line Lambda would take for INFO
    # Parked, not enqueued: only its own embedded metric counts, whatever the metric filters.
    assert "PostbackEnqueued" not in counted_metrics(records)
    assert counted_metrics([parked]) == {"PostbackParked": [{"service": "kitehooks"}]}


def test_keys_appended_to_the_service_logger_do_not_outlive_the_invocation(
    stack: ResourceValues, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Code sharing the service's logger may append keys (as inject_lambda_context does); the
    postback function's next line starts from the service's own keys again."""
    monkeypatch.setenv("ORDER_UPDATES_QUEUE_URL", stack["OrderUpdatesQueue"]["Ref"])
    monkeypatch.setenv("UNDELIVERED_BUCKET", stack["UndeliveredPostbacksBucket"]["Ref"])
    monkeypatch.setenv("API_CREDENTIALS_SECRET_ID", stack["ApiCredentialsSecret"]["Ref"])
    reset_layer_caches()
    app = load_function("postback")
    app.logger.append_keys(function_arn="arn:aws:lambda:ap-south-1:123456789012:function:other")
    event = http_api_event("POST", "/postback", postback_body(TEST_API_SECRET), request_id=REQUEST_ID)
    assert app.handler(event, FakeLambdaContext())["statusCode"] == 200
    reset_layer_caches()
    [line] = [line for line in capsys.readouterr().out.splitlines() if "postback enqueued" in line]
    assert "function_arn" not in json.loads(line)


def test_the_accepted_line_is_the_same_whether_written_directly_or_through_logging(
    stack: ResourceValues, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The accepted line skips the logging module when only this path's handler would get it (as
    in Lambda, whose root handler suppresses the service's records): the bytes must not change,
    and anything else listening (here a capture like the tests' service_logs) must still get it."""
    monkeypatch.setenv("ORDER_UPDATES_QUEUE_URL", stack["OrderUpdatesQueue"]["Ref"])
    monkeypatch.setenv("UNDELIVERED_BUCKET", stack["UndeliveredPostbacksBucket"]["Ref"])
    monkeypatch.setenv("API_CREDENTIALS_SECRET_ID", stack["ApiCredentialsSecret"]["Ref"])
    reset_layer_caches()
    load_function("postback")
    from kitehooks.postbacks import log_lines

    about = {"correlation_id": REQUEST_ID, "order_id": "220303000308932", "status": "COMPLETE"}
    runtime_root = logging.StreamHandler(io_sink := _Lines())
    runtime_root.addFilter(SuppressFilter("kitehooks"))  # what Powertools adds to Lambda's root handler
    monkeypatch.setattr(logging.root, "handlers", [runtime_root])
    assert log_lines._only_this_path_listens()
    log_lines.count_enqueued(about)
    direct = capsys.readouterr().out
    assert io_sink.lines == []

    listening = logging.StreamHandler(captured := _Lines())
    listening.setFormatter(log_lines._LOG_FORMATTER)
    logging.getLogger("kitehooks").addHandler(listening)
    try:
        assert not log_lines._only_this_path_listens()
        log_lines.count_enqueued(about)
    finally:
        logging.getLogger("kitehooks").removeHandler(listening)
    through_logging = capsys.readouterr().out
    reset_layer_caches()

    assert direct == through_logging
    assert captured.lines == [direct]
    assert json.loads(direct)["outcome"] == "queued"


class _Lines:
    """A stream that keeps what each write call wrote."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass
