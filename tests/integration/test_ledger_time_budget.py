"""With OrderConfirmation=on, a DynamoDB that hangs, refuses, trickles or fails during the ledger
write costs the postback nothing: it is on the queue, Kite gets its 200 in time, and one WARNING
line carries the OrderStateNotRecorded metric.

Each case runs the real handler in a child process as Lambda runs it (tests/lambda_child.py), with
``AWS_ENDPOINT_URL_DYNAMODB`` pointed at a faulty endpoint (tests/faults.py) and every other
service at the moto server. The cases run side by side, so the file costs one worst case.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from kitehooks.orders.ledger import OrderLedger
from kitehooks.postbacks.receiver import LEDGER_WRITE_SECONDS
from local.gateway import load_template
from local.provision import ResourceValues, provision
from local.samples import http_api_event, postback_order
from tests.conftest import (
    REGION,
    TEMPLATE,
    TEST_API_KEY,
    TEST_API_SECRET,
    closed_port,
    lambda_child_command,
    lambda_child_environment,
    point_boto3_at,
)
from tests.faults import FailingEndpoint, HangingEndpoint, TricklingEndpoint
from tests.integration.test_time_budget import _queued

USER = "AB1234"
NOT_RECORDED = "order state not recorded in the ledger"
# The answer leaves at least this long before the function's Timeout (as in test_time_budget).
REQUIRED_MARGIN_SECONDS = 2.0
# The ledger write's own limit, and some room for the queue send and the interpreter around it.
WITHIN_SECONDS = LEDGER_WRITE_SECONDS + 1.5
CASES = ["none", "hang", "refuse", "trickle", "fail"]


@dataclass
class Answer:
    order_id: str
    checksum: str
    body: bytes
    status: int | None = None
    seconds: float | None = None
    output: str = ""
    log_lines: list[dict[str, Any]] = field(default_factory=list)


def _postback_timeout() -> float:
    template = load_template(TEMPLATE)
    own = template["Resources"]["PostbackFunction"]["Properties"].get("Timeout")
    return float(own if own is not None else template["Globals"]["Function"]["Timeout"])


def _finish(process: subprocess.Popen[str], answer: Answer) -> None:
    try:
        output, _ = process.communicate(timeout=120)  # a safety net only: the child stops itself
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    answer.output = output
    for line in output.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line.removeprefix("RESULT "))
            answer.status, answer.seconds = result["response"]["statusCode"], result["seconds"]
        elif line.startswith("{"):
            try:
                answer.log_lines.append(json.loads(line))
            except ValueError:
                continue


@pytest.fixture(scope="module")
def answers(moto_endpoint: str) -> Iterator[tuple[dict[str, Answer], ResourceValues]]:
    with pytest.MonkeyPatch.context() as environment:
        point_boto3_at(environment, moto_endpoint)
        stack = provision(
            TEMPLATE,
            stack_name=f"t{uuid.uuid4().hex[:10]}",
            region=REGION,
            secret_values={
                "ApiCredentialsSecret": json.dumps({"api_key": TEST_API_KEY, "api_secret": TEST_API_SECRET})
            },
        )
        variables = {
            "ORDER_UPDATES_QUEUE_URL": stack["OrderUpdatesQueue"]["Ref"],
            "UNDELIVERED_BUCKET": stack["UndeliveredPostbacksBucket"]["Ref"],
            "API_CREDENTIALS_SECRET_ID": stack["ApiCredentialsSecret"]["Ref"],
            "ORDER_LEDGER_TABLE": stack["OrderLedgerTable"]["Ref"],
        }
        with (
            HangingEndpoint() as hanging,
            TricklingEndpoint(interval=1.0) as trickling,
            FailingEndpoint() as failing,
        ):
            endpoints = {
                "hang": hanging.url,
                "trickle": trickling.url,
                "fail": failing.url,
                "refuse": f"http://127.0.0.1:{closed_port()}",
            }
            running: dict[str, tuple[subprocess.Popen[str], Answer]] = {}
            for index, case in enumerate(CASES):
                order = postback_order(
                    TEST_API_SECRET, order_id=f"92000000{index:07d}", user_id=USER, status="COMPLETE"
                )
                body = json.dumps(order, separators=(",", ":")).encode()
                environment_variables = lambda_child_environment(moto_endpoint, **variables)
                if case in endpoints:
                    environment_variables["AWS_ENDPOINT_URL_DYNAMODB"] = endpoints[case]
                event = http_api_event("POST", "/postback", body, request_id=f"ledger-budget-{case}")
                with tempfile.TemporaryFile("w+") as event_file:
                    json.dump(event, event_file)
                    event_file.seek(0)
                    process = subprocess.Popen(
                        lambda_child_command("postback", _postback_timeout()),
                        stdin=event_file,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                        env=environment_variables,
                    )
                running[case] = (process, Answer(order["order_id"], order["checksum"], body))
            results: dict[str, Answer] = {}
            for case, (process, answer) in running.items():
                _finish(process, answer)
                results[case] = answer
        yield results, stack


@pytest.fixture(scope="module")
def queued(answers: tuple[dict[str, Answer], ResourceValues], moto_endpoint: str) -> dict[str, list[str]]:
    with pytest.MonkeyPatch.context() as environment:
        point_boto3_at(environment, moto_endpoint)
        return _queued(answers[1])


def _metric_names(line: dict[str, Any]) -> set[str]:
    return {
        metric["Name"]
        for directive in line.get("_aws", {}).get("CloudWatchMetrics", [])
        for metric in directive["Metrics"]
    }


def _describe(answer: Answer) -> str:
    return f"status {answer.status} after {answer.seconds} s; output:\n{answer.output[-3000:]}"


@pytest.mark.parametrize("case", CASES)
def test_the_ledger_never_costs_a_postback_its_answer_or_its_message(
    case: str,
    answers: tuple[dict[str, Answer], ResourceValues],
    queued: dict[str, list[str]],
    moto_endpoint: str,
) -> None:
    answer = answers[0][case]
    assert answer.seconds is not None, f"no answer before the Timeout: {_describe(answer)}"
    assert answer.status == 200, _describe(answer)
    assert answer.seconds <= min(WITHIN_SECONDS, _postback_timeout() - REQUIRED_MARGIN_SECONDS), _describe(
        answer
    )
    assert queued.get(answer.order_id) == [answer.body.decode()]

    messages = [line.get("message") for line in answer.log_lines]
    assert "postback enqueued" in messages, _describe(answer)
    warnings = [line for line in answer.log_lines if line.get("message") == NOT_RECORDED]
    with pytest.MonkeyPatch.context() as environment:
        point_boto3_at(environment, moto_endpoint)
        recorded = OrderLedger(boto3.client("dynamodb"), answers[1]["OrderLedgerTable"]["Ref"]).delivered(
            USER, answer.order_id
        )
    if case == "none":
        assert warnings == []
        assert recorded == {"COMPLETE|1"}
    else:
        [warning] = warnings
        assert warning["level"] == "WARNING"
        assert "OrderStateNotRecorded" in _metric_names(warning), _describe(answer)
        assert warning["order_id"] == answer.order_id
        assert (
            warning["reason"].startswith("DynamoDB ")
            or warning["reason"] == "DynamoDB did not answer in time"
        )
        assert recorded == frozenset()
    # Neither the app's secret nor the postback's checksum reaches a log line.
    assert TEST_API_SECRET not in answer.output
    assert answer.checksum not in answer.output
