"""The postback and callback functions answer before their Timeout, whatever AWS or Kite does.

Each case runs the real handler in a child process, as Lambda runs it, with boto3's per-service
``AWS_ENDPOINT_URL_<SERVICE>`` pointing one or more services at an endpoint that hangs (accepts,
never answers), refuses, or trickles a byte a second (so per-read timeouts never fire). The other
services are a moto server; Kite is the simulator, or a faulty endpoint itself. Every case asserts
the answer, what was stored, the log line and metric, and the wall time against the function's
``Timeout`` in template.yaml. The cases run side by side so the whole file costs one worst case.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from kitehooks.login import state as login_state
from kitehooks.login.start import state_cookie_name
from local.gateway import load_template
from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues, provision
from local.samples import http_api_event, postback_body
from tests.conftest import (
    REGION,
    TEMPLATE,
    TEST_API_KEY,
    TEST_API_SECRET,
    closed_port,
    fresh_request_token,
    lambda_child_command,
    lambda_child_environment,
    point_boto3_at,
)
from tests.faults import HangingEndpoint, TricklingEndpoint
from tests.integration.test_postback_logging import counted_metrics

ENDPOINT_VARIABLES = {
    "secretsmanager": "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "sqs": "AWS_ENDPOINT_URL_SQS",
    "s3": "AWS_ENDPOINT_URL_S3",
    "dynamodb": "AWS_ENDPOINT_URL_DYNAMODB",
}
# The answer must leave at least this long before the function's Timeout.
REQUIRED_MARGIN_SECONDS = 2.0
# API Gateway gives up on the integration after 30 s.
API_GATEWAY_SECONDS = 30.0
ALL_AWS = ("secretsmanager", "sqs", "s3", "dynamodb")


def function_timeout(logical_id: str) -> float:
    template = load_template(TEMPLATE)
    own = template["Resources"][logical_id]["Properties"].get("Timeout")
    return float(own if own is not None else template["Globals"]["Function"]["Timeout"])


@dataclass(frozen=True)
class Case:
    name: str
    function: str  # "postback" | "callback"
    faults: dict[str, str]  # service ("kite" or an AWS service) -> "hang" | "refuse" | "trickle"
    status: int
    stored: str  # postback: queued | verified | unverified | nothing; callback: session | nothing
    log: str  # the message of a log line the case must produce ("a|b": either)
    metric: str = ""
    tampered: bool = False
    within: float | None = None  # a tighter bound than the Timeout's, where the case has one


def _all(mode: str, *services: str) -> dict[str, str]:
    return dict.fromkeys(services, mode)


PARKED, QUEUED = "postback parked", "postback enqueued"
LOST = "postback could not be stored anywhere"
KITE_FAILED = "request_token exchange failed"


POSTBACK_CASES = [
    Case("secrets-hang", "postback", _all("hang", "secretsmanager"), 503, "unverified",
         PARKED, "PostbackParkedUnverified"),
    Case("secrets-refuse", "postback", _all("refuse", "secretsmanager"), 503, "unverified",
         PARKED, "PostbackParkedUnverified"),
    Case("secrets-trickle", "postback", _all("trickle", "secretsmanager"), 503, "unverified",
         PARKED, "PostbackParkedUnverified"),
    Case("sqs-hang", "postback", _all("hang", "sqs"), 202, "verified", PARKED, "PostbackParked"),
    Case("sqs-refuse", "postback", _all("refuse", "sqs"), 202, "verified", PARKED, "PostbackParked"),
    Case("sqs-trickle", "postback", _all("trickle", "sqs"), 202, "verified", PARKED, "PostbackParked"),
    Case("s3-hang", "postback", _all("hang", "s3"), 200, "queued", QUEUED, "PostbackEnqueued"),
    Case("dynamodb-hang", "postback", _all("hang", "dynamodb"), 200, "queued", QUEUED,
         "PostbackEnqueued"),
    Case("secrets-s3-hang", "postback", _all("hang", "secretsmanager", "s3"), 503, "nothing",
         LOST, "PostbackLost"),
    Case("sqs-s3-hang", "postback", _all("hang", "sqs", "s3"), 503, "nothing",
         LOST, "PostbackLost"),
    Case("sqs-s3-trickle", "postback", _all("trickle", "sqs", "s3"), 503, "nothing",
         LOST, "PostbackLost"),
    Case("secrets-trickle-s3-hang", "postback", {"secretsmanager": "trickle", "s3": "hang"}, 503, "nothing",
         LOST, "PostbackLost"),
    Case("sqs-refuse-s3-trickle", "postback", {"sqs": "refuse", "s3": "trickle"}, 503, "nothing",
         LOST, "PostbackLost"),
    Case("all-hang", "postback", _all("hang", *ALL_AWS), 503, "nothing",
         LOST, "PostbackLost"),
    Case("all-refuse", "postback", _all("refuse", *ALL_AWS), 503, "nothing",
         LOST, "PostbackLost"),
    Case("all-trickle", "postback", _all("trickle", *ALL_AWS), 503, "nothing",
         LOST, "PostbackLost"),
    # Keeping a copy of a probably forged postback may take 5 s, not the whole invocation.
    Case("tampered-s3-trickle", "postback", _all("trickle", "s3"), 403, "nothing",
         "rejected postback not kept", "PostbackRejected", tampered=True, within=6.0),
]  # fmt: skip

CALLBACK_CASES = [
    Case("kite-trickle", "callback", _all("trickle", "kite"), 504, "nothing", KITE_FAILED),
    Case("kite-hang", "callback", _all("hang", "kite"), 504, "nothing", KITE_FAILED),
    Case("kite-refuse", "callback", _all("refuse", "kite"), 502, "nothing", KITE_FAILED),
    # Two attempts of 3 s reads and a back-off end near the 7 s limit: either page is right.
    Case("callback-secrets-hang", "callback", _all("hang", "secretsmanager"), 503, "nothing",
         "login timed out before it could be completed|login unavailable"),
    Case("callback-secrets-trickle", "callback", _all("trickle", "secretsmanager"), 503, "nothing",
         "login timed out before it could be completed"),
    Case("callback-dynamodb-hang", "callback", _all("hang", "dynamodb"), 503, "nothing",
         "cannot record login state"),
    Case("callback-dynamodb-trickle", "callback", _all("trickle", "dynamodb"), 503, "nothing",
         "cannot record login state"),
    Case("callback-kite-trickle-dynamodb-hang", "callback", {"kite": "trickle", "dynamodb": "hang"}, 503,
         "nothing", "cannot record login state"),
    Case("callback-s3-sqs-hang", "callback", _all("hang", "s3", "sqs"), 200, "session", "session stored"),
]  # fmt: skip


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str]
    body: str
    seconds: float | None  # the handler's own wall time
    output: str
    sent_body: bytes = b""
    order_id: str = ""
    user_id: str = ""
    log_lines: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Faults:
    hanging: HangingEndpoint
    trickling: TricklingEndpoint

    def url(self, mode: str) -> str:
        if mode == "hang":
            return self.hanging.url
        if mode == "trickle":
            return self.trickling.url
        return f"http://127.0.0.1:{closed_port()}"


def _child_environment(moto: str, faults: Faults, case: Case, variables: dict[str, str]) -> dict[str, str]:
    environment = lambda_child_environment(moto, **variables)
    for service, mode in case.faults.items():
        if service in ENDPOINT_VARIABLES:
            environment[ENDPOINT_VARIABLES[service]] = faults.url(mode)
    return environment


def _start(
    case: Case, event: dict[str, Any], environment: dict[str, str], timeout: float
) -> subprocess.Popen[str]:
    with tempfile.TemporaryFile("w+") as event_file:
        json.dump(event, event_file)
        event_file.seek(0)
        return subprocess.Popen(
            lambda_child_command(case.function, timeout),
            stdin=event_file,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
        )


def _finish(process: subprocess.Popen[str]) -> Answer:
    """The child's answer; a child that was still running at its Timeout (it stops itself then,
    as Lambda would stop it) has none."""
    try:
        output, _ = process.communicate(timeout=120)  # a safety net only: the child stops itself
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        return Answer(None, {}, "", None, output)
    result_lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    if not result_lines:
        return Answer(None, {}, "", None, output)
    result = json.loads(result_lines[-1].removeprefix("RESULT "))
    response = result["response"]
    log_lines = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                log_lines.append(json.loads(line))
            except ValueError:
                continue
    return Answer(
        response["statusCode"],
        {key.lower(): value for key, value in (response.get("headers") or {}).items()},
        response.get("body", ""),
        result["seconds"],
        output,
        log_lines=log_lines,
    )


def _callback_event(request_token: str) -> dict[str, Any]:
    nonce = login_state.new_nonce()
    state = login_state.sign_state(TEST_API_SECRET, nonce, int(time.time()) + 600, None)
    return http_api_event(
        "GET",
        "/callback",
        query=f"action=login&type=login&status=success&request_token={request_token}&state={state}",
        cookies=[f"{state_cookie_name(True)}={nonce}"],
    )


@pytest.fixture(scope="module")
def answers(moto_endpoint: str) -> Iterator[tuple[dict[str, Answer], ResourceValues]]:
    """Every case, run side by side against one provisioned stack."""
    with pytest.MonkeyPatch.context() as environment:
        point_boto3_at(environment, moto_endpoint)
        credentials = json.dumps({"api_key": TEST_API_KEY, "api_secret": TEST_API_SECRET})
        stack_name = f"t{uuid.uuid4().hex[:10]}"
        stack = provision(
            TEMPLATE,
            stack_name=stack_name,
            region=REGION,
            secret_values={"ApiCredentialsSecret": credentials},
        )
        with (
            HangingEndpoint() as hanging,
            TricklingEndpoint(interval=1.0) as trickling,
            KiteSimulator(
                api_key=TEST_API_KEY,
                api_secret=TEST_API_SECRET,
                redirect_url="https://kitehooks.example/callback",
            ) as sim,
        ):
            faults = Faults(hanging, trickling)
            postback_variables = {
                "ORDER_UPDATES_QUEUE_URL": stack["OrderUpdatesQueue"]["Ref"],
                "UNDELIVERED_BUCKET": stack["UndeliveredPostbacksBucket"]["Ref"],
                "API_CREDENTIALS_SECRET_ID": stack["ApiCredentialsSecret"]["Ref"],
            }
            running: dict[str, tuple[subprocess.Popen[str], Answer]] = {}
            for index, case in enumerate(POSTBACK_CASES):
                order_id = f"9100000{index:08d}"
                secret = "not-the-api-secret" if case.tampered else TEST_API_SECRET
                body = postback_body(secret, order_id=order_id)
                timeout = function_timeout("PostbackFunction")
                event = http_api_event("POST", "/postback", body, request_id=f"budget-{case.name}")
                process = _start(
                    case, event, _child_environment(moto_endpoint, faults, case, postback_variables), timeout
                )
                running[case.name] = (process, Answer(None, {}, "", None, "", body, order_id))
            for case in CALLBACK_CASES:
                request_token = (
                    fresh_request_token(sim) if "kite" not in case.faults else secrets.token_hex(16)
                )
                kite_root = faults.url(case.faults["kite"]) if "kite" in case.faults else sim.url
                callback_variables = {
                    "API_CREDENTIALS_SECRET_ID": stack["ApiCredentialsSecret"]["Ref"],
                    "SESSION_PREFIX": f"{stack_name}/sessions",
                    "LOGIN_STATES_TABLE": stack["LoginStatesTable"]["Ref"],
                    "KITE_API_ROOT": kite_root,
                    "KITE_LOGIN_URL": sim.url + "/connect/login",
                    "KITE_READ_TIMEOUT_SECONDS": "10",
                }
                timeout = function_timeout("CallbackFunction")
                environment_variables = _child_environment(moto_endpoint, faults, case, callback_variables)
                process = _start(case, _callback_event(request_token), environment_variables, timeout)
                running[case.name] = (process, Answer(None, {}, "", None, ""))
            results: dict[str, Answer] = {}
            for name, (process, sent) in running.items():
                answer = _finish(process)
                answer.sent_body, answer.order_id = sent.sent_body, sent.order_id
                results[name] = answer
        yield results, stack


def _queued(stack: ResourceValues) -> dict[str, list[str]]:
    sqs = boto3.client("sqs")
    bodies: dict[str, list[str]] = {}
    while True:
        batch = sqs.receive_message(
            QueueUrl=stack["OrderUpdatesQueue"]["Ref"],
            MaxNumberOfMessages=10,
            MessageSystemAttributeNames=["MessageGroupId"],
            WaitTimeSeconds=0,
            VisibilityTimeout=600,
        ).get("Messages", [])
        if not batch:
            return bodies
        for message in batch:
            bodies.setdefault(message["Attributes"]["MessageGroupId"], []).append(message["Body"])


def _parked(stack: ResourceValues) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    bucket = stack["UndeliveredPostbacksBucket"]["Ref"]
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


@pytest.fixture(scope="module")
def stored(answers: tuple[dict[str, Answer], ResourceValues], moto_endpoint: str) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as environment:
        point_boto3_at(environment, moto_endpoint)
        _, stack = answers
        stack_name = stack["ApiCredentialsSecret"]["Name"].partition("/")[0]
        sessions = boto3.client("secretsmanager").list_secrets(
            Filters=[{"Key": "name", "Values": [f"{stack_name}/sessions/"]}]
        )["SecretList"]
        return {"queued": _queued(stack), "parked": _parked(stack), "sessions": len(sessions)}


def _must_answer_within(case: Case) -> float:
    timeout = function_timeout("PostbackFunction" if case.function == "postback" else "CallbackFunction")
    limit = timeout - REQUIRED_MARGIN_SECONDS
    if case.function == "callback":
        limit = min(limit, API_GATEWAY_SECONDS - REQUIRED_MARGIN_SECONDS)
    return min(limit, case.within or limit)


def _describe(answer: Answer) -> str:
    return f"status {answer.status} after {answer.seconds} s; output:\n{answer.output[-3000:]}"


@pytest.mark.parametrize("case", POSTBACK_CASES, ids=lambda case: case.name)
def test_postback_answers_before_its_timeout(
    case: Case, answers: tuple[dict[str, Answer], ResourceValues], stored: dict[str, Any]
) -> None:
    answer = answers[0][case.name]
    assert answer.seconds is not None, f"no answer before the Timeout: {_describe(answer)}"
    assert answer.seconds <= _must_answer_within(case), _describe(answer)
    assert answer.status == case.status, _describe(answer)

    queued = stored["queued"].get(answer.order_id, [])
    parked = {key: body for key, body in stored["parked"].items() if body == answer.sent_body}
    if case.stored == "queued":
        assert queued == [answer.sent_body.decode()]
        assert not parked
    elif case.stored in ("verified", "unverified"):
        assert not queued
        assert [key.split("/")[1] for key in parked] == [case.stored]
    else:
        assert not queued
        assert not parked

    messages = [line.get("message") for line in answer.log_lines]
    assert case.log in messages, _describe(answer)
    if case.metric == "PostbackLost":
        [lost] = [line for line in answer.log_lines if line.get("message") == case.log]
        assert lost["level"] == "CRITICAL"
    # Embedded metrics, and the template's metric filters on the function's log group
    # (PostbackEnqueued is counted from the accepted line by a filter the local stack lacks).
    assert case.metric in counted_metrics(answer.log_lines), _describe(answer)


@pytest.mark.parametrize("case", CALLBACK_CASES, ids=lambda case: case.name)
def test_callback_answers_with_its_own_page_before_api_gateway_gives_up(
    case: Case, answers: tuple[dict[str, Answer], ResourceValues], stored: dict[str, Any]
) -> None:
    answer = answers[0][case.name]
    assert answer.seconds is not None, f"no answer before the Timeout: {_describe(answer)}"
    assert answer.seconds <= _must_answer_within(case), _describe(answer)
    assert answer.status == case.status, _describe(answer)
    assert answer.headers.get("content-type", "").startswith("text/html"), _describe(answer)
    assert "<h1>" in answer.body
    messages = [line.get("message") for line in answer.log_lines]
    assert set(case.log.split("|")) & set(messages), _describe(answer)
    assert TEST_API_SECRET not in answer.output
    # Every case logs in the simulator's one user: only the cases that reach the store keep a session.
    assert stored["sessions"] == sum(other.stored == "session" for other in CALLBACK_CASES)
