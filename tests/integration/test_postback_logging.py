"""What the postback function writes to its log per request, measured as Lambda would see it.

Each case runs the real handler in a fresh interpreter (tests/lambda_child.py, as Lambda runs it)
against a moto server, and looks at every line the function writes: those lines are what
CloudWatch Logs ingests and bills, and the metric lines among them are the function's metrics.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from typing import Any

import pytest

from local.provision import ResourceValues
from local.samples import http_api_event, postback_body
from tests.conftest import (
    TEST_API_SECRET,
    FakeLambdaContext,
    closed_port,
    lambda_child_command,
    lambda_child_environment,
    load_function,
    reset_layer_caches,
)

# The accepted line's budget at the template's default level, with Kite's usual order id (15
# digits), status and API Gateway request id (16 characters). The line is ~345 bytes: the metric in
# CloudWatch's embedded format takes ~190 of them (benchmarks/RESULTS.md has the figures).
ACCEPTED_LINE_BUDGET = 350
REQUEST_ID = "JjpPHjiyBcwEM2w="


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


def test_an_accepted_postback_writes_one_lean_line_that_is_also_its_metric(
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
    assert record["correlation_id"] == REQUEST_ID
    # Lambda's own records say these already: the line does not repeat them.
    for repeated in ("function_arn", "function_name", "function_request_id", "cold_start", "xray_trace_id"):
        assert repeated not in record
    assert _metrics(record) == {"PostbackEnqueued": [["service"]]}
    assert (record["PostbackEnqueued"], record["service"]) == (1, "kitehooks")
    assert record["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "PostbackEnqueued", "Unit": "Count"}
    ]


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
    # One datum, published both under service (the alarm's) and under service + reason.
    assert _metrics(record) == {"PostbackRejected": [["service"], ["service", "reason"]]}
    assert record["PostbackRejected"] == 1
    assert json.loads(forged)["checksum"] not in line
    assert TEST_API_SECRET not in line


@pytest.mark.parametrize("log_level", ["WARN", "ERROR"])
def test_above_info_the_accepted_line_is_dropped_but_its_metric_still_counts(
    stack: ResourceValues, moto_endpoint: str, log_level: str
) -> None:
    [line] = _run(stack, moto_endpoint, postback_body(TEST_API_SECRET), log_level=log_level)
    record = json.loads(line)
    assert "message" not in record
    assert _metrics(record) == {"PostbackEnqueued": [["service"]]}
    assert record["PostbackEnqueued"] == 1


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
