"""Lambda's Invoke API on the local gateway's port, driven by boto3's own lambda client over HTTP
(``AWS_ENDPOINT_URL_LAMBDA``), the way users' code and the consumer API's expiry hook reach it."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from local.gateway import LocalGateway
from tests.unit.test_gateway import RESOURCES, gateway_cli, write_fake_stack

TIMEOUT = 15


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalGateway]:
    template = write_fake_stack(tmp_path_factory.mktemp("stack"))
    # QuietFunction has no HttpApi event (a schedule only): it is reachable through Invoke alone.
    with LocalGateway(
        template, port=0, resources=RESOURCES, parameter_overrides={"NoDefault": "given"}
    ) as running:
        yield running


@pytest.fixture
def lambda_client(gateway: LocalGateway, monkeypatch: pytest.MonkeyPatch) -> Any:
    # boto3's own setting, as a user would set it: the lambda client alone goes to the local stack.
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", gateway.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing else may be used
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    make_client: Any = boto3.client
    return make_client(
        "lambda", region_name="ap-south-1", config=Config(retries={"total_max_attempts": 1}, read_timeout=30)
    )


def payload_of(answer: dict[str, Any]) -> Any:
    return json.loads(answer["Payload"].read())


def echoed_event(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["StatusCode"] == 200
    assert "FunctionError" not in answer
    result = payload_of(answer)
    body: dict[str, Any] = json.loads(result["body"])
    return body


def test_a_function_without_a_route_is_invoked_with_the_payload_as_its_event(lambda_client: Any) -> None:
    answer = lambda_client.invoke(FunctionName="QuietFunction", Payload=b'{"action": "status", "n": 1}')
    body = echoed_event(answer)
    assert body["event"] == {"action": "status", "n": 1}
    assert body["env"]["NEEDS"] == "given"  # the template's environment, resolved
    assert body["env"]["AWS_LAMBDA_FUNCTION_NAME"] == "QuietFunction"
    assert body["layer"] == "from-the-layer"
    assert body["context"]["function_name"] == "QuietFunction"
    assert answer["ExecutedVersion"] == "$LATEST"
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


def test_a_routed_function_is_invocable_too_and_gets_the_raw_payload(lambda_client: Any) -> None:
    body = echoed_event(lambda_client.invoke(FunctionName="EchoFunction", Payload=b'{"action": "expire"}'))
    assert body["event"] == {"action": "expire"}  # as sent, not wrapped in an API Gateway event


def test_function_named_by_arn_partial_arn_and_latest_qualifier(
    lambda_client: Any, gateway: LocalGateway
) -> None:
    arn = gateway.functions["QuietFunction"].function_arn
    assert arn == "arn:aws:lambda:ap-south-1:123456789012:function:QuietFunction"
    for name, qualifier in (
        (arn, None),
        ("123456789012:function:QuietFunction", None),
        ("QuietFunction:$LATEST", None),
        ("QuietFunction", "$LATEST"),
    ):
        extra = {"Qualifier": qualifier} if qualifier else {}
        assert echoed_event(lambda_client.invoke(FunctionName=name, Payload=b"{}", **extra))["event"] == {}


def test_unknown_function_version_region_or_account_is_resource_not_found(lambda_client: Any) -> None:
    for name, extra in (
        ("NoSuchFunction", {}),
        ("QuietFunction", {"Qualifier": "live"}),
        ("arn:aws:lambda:us-east-1:123456789012:function:QuietFunction", {}),
        ("999999999999:function:QuietFunction", {}),
    ):
        with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as raised:
            lambda_client.invoke(FunctionName=name, Payload=b"{}", **extra)
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        assert "Function not found: arn:aws:lambda:" in str(raised.value)


def test_not_found_is_json_as_lambda_answers_it(gateway: LocalGateway) -> None:
    answer = requests.post(
        f"{gateway.url}/2015-03-31/functions/NoSuchFunction/invocations", data=b"{}", timeout=TIMEOUT
    )
    assert answer.status_code == 404
    assert answer.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "Type": "User",
        "Message": "Function not found: arn:aws:lambda:ap-south-1:123456789012:function:NoSuchFunction",
    }


def test_a_handler_that_raised_is_unhandled_with_its_message_and_type(lambda_client: Any) -> None:
    answer = lambda_client.invoke(
        FunctionName="ResponsesFunction", Payload=json.dumps({"pathParameters": {"kind": "raise"}})
    )
    assert answer["StatusCode"] == 200
    assert answer["FunctionError"] == "Unhandled"
    error = payload_of(answer)
    assert error["errorType"] == "RuntimeError"
    assert error["errorMessage"] == "handler-secret-detail"
    assert error["requestId"] == answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert any("app.py" in frame and "in handler" in frame for frame in error["stackTrace"])
    # The same worker still serves: a handler's exception does not cost the warm container.
    fine = lambda_client.invoke(
        FunctionName="ResponsesFunction", Payload=b'{"pathParameters": {"kind": "x"}}'
    )
    assert "FunctionError" not in fine


def test_a_timed_out_or_crashed_handler_is_unhandled(lambda_client: Any) -> None:
    timed_out = lambda_client.invoke(
        FunctionName="ResponsesFunction", Payload=b'{"pathParameters": {"kind": "sleep"}}'
    )
    assert timed_out["FunctionError"] == "Unhandled"
    error = payload_of(timed_out)
    assert error["errorType"] == "Sandbox.Timedout"
    assert re.search(r"Task timed out after 1\.00 seconds$", error["errorMessage"])

    crashed = lambda_client.invoke(
        FunctionName="ResponsesFunction", Payload=b'{"pathParameters": {"kind": "crash"}}'
    )
    assert crashed["FunctionError"] == "Unhandled"
    assert payload_of(crashed)["errorType"] == "Runtime.ExitError"

    broken = lambda_client.invoke(FunctionName="BrokenFunction", Payload=b"{}")
    assert broken["FunctionError"] == "Unhandled"
    assert "could not be loaded" in payload_of(broken)["errorMessage"]


def test_event_invocation_answers_202_at_once_and_runs_in_the_background(
    lambda_client: Any, tmp_path: Path
) -> None:
    # The echo handler marks its arrival in the folder, then waits up to 5 s for a second arrival.
    folder = tmp_path / "arrivals"
    started = time.monotonic()
    answer = lambda_client.invoke(
        FunctionName="QuietFunction",
        InvocationType="Event",
        Payload=json.dumps({"queryStringParameters": {"together": str(folder)}}),
    )
    assert time.monotonic() - started < 4  # not held for the handler's 5 s wait
    assert answer["StatusCode"] == 202
    assert answer["Payload"].read() == b""
    deadline = time.monotonic() + TIMEOUT
    while not (folder.is_dir() and any(folder.iterdir())):
        assert time.monotonic() < deadline, "the Event invocation never ran"
        time.sleep(0.05)


def test_dry_run_runs_nothing(lambda_client: Any, tmp_path: Path) -> None:
    folder = tmp_path / "arrivals"
    answer = lambda_client.invoke(
        FunctionName="QuietFunction",
        InvocationType="DryRun",
        Payload=json.dumps({"queryStringParameters": {"together": str(folder)}}),
    )
    assert answer["StatusCode"] == 204
    time.sleep(0.5)
    assert not folder.exists()


def test_a_payload_that_is_not_json_is_refused(lambda_client: Any) -> None:
    with pytest.raises(lambda_client.exceptions.InvalidRequestContentException) as raised:
        lambda_client.invoke(FunctionName="QuietFunction", Payload=b"{not json")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Could not parse request body into json" in str(raised.value)


def test_payloads_over_lambdas_limits_are_refused(lambda_client: Any) -> None:
    big_event = json.dumps({"pad": "x" * (1024 * 1024)})  # over 1 MB: too big for Event only
    with pytest.raises(lambda_client.exceptions.RequestTooLargeException):
        lambda_client.invoke(FunctionName="QuietFunction", InvocationType="Event", Payload=big_event)
    assert (
        lambda_client.invoke(FunctionName="QuietFunction", InvocationType="DryRun", Payload=big_event)[
            "StatusCode"
        ]
        == 204
    )


def test_a_function_whose_environment_cannot_resolve_is_reported_not_fatal(tmp_path: Path) -> None:
    template = write_fake_stack(tmp_path / "stack")
    # Without the NoDefault parameter the routed functions still serve; QuietFunction says why not.
    with LocalGateway(template, port=0, resources=RESOURCES) as running:
        assert requests.get(f"{running.url}/other", timeout=TIMEOUT).status_code == 200
        answer = requests.post(
            f"{running.url}/2015-03-31/functions/QuietFunction/invocations", data=b"{}", timeout=TIMEOUT
        )
    assert answer.status_code == 502
    assert answer.headers["x-amzn-ErrorType"] == "ResourceNotReadyException"
    assert "NoDefault" in answer.json()["Message"]


def test_other_lambda_operations_are_refused_clearly(lambda_client: Any) -> None:
    with pytest.raises(ClientError) as raised:
        lambda_client.get_function(FunctionName="QuietFunction")
    assert raised.value.response["Error"]["Code"] == "UnknownOperationException"
    assert "serves only Invoke" in str(raised.value)


def test_the_gateway_command_serves_the_invoke_api(tmp_path: Path) -> None:
    # `python -m local.gateway` runs as __main__: the Invoke API must still recognise its workers'
    # outcomes (a handler that raised is Unhandled, not a dropped connection).
    template = write_fake_stack(tmp_path / "stack")
    resources_file = tmp_path / "resources.json"
    resources_file.write_text(json.dumps(RESOURCES), encoding="utf-8")
    arguments = ["--template", str(template), "--port", "0", "--resources", str(resources_file)]
    arguments += ["--parameter-overrides", "NoDefault=given"]
    with gateway_cli(*arguments) as (process, gateway_url):
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(8)]  # one per route, then the Invoke API
        [invoke_line] = [line for line in lines if "Lambda Invoke API" in line]
        assert "QuietFunction" in invoke_line
        url = f"{gateway_url}/2015-03-31/functions"
        raised = requests.post(
            f"{url}/ResponsesFunction/invocations",
            data=b'{"pathParameters": {"kind": "raise"}}',
            timeout=TIMEOUT,
        )
        assert raised.status_code == 200
        assert raised.headers["X-Amz-Function-Error"] == "Unhandled"
        assert raised.json()["errorType"] == "RuntimeError"
        quiet = requests.post(f"{url}/QuietFunction/invocations", data=b'{"n": 1}', timeout=TIMEOUT)
        assert json.loads(quiet.json()["body"])["event"] == {"n": 1}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
