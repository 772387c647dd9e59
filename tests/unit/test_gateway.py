"""The local API gateway: routes from the template, payload 2.0 events as API Gateway makes them,
responses mapped back, and handlers run in isolated, warm worker processes over real HTTP."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from cfnlint.decode.cfn_yaml import load as cfn_load

from local.gateway import (
    GatewayError,
    GatewayRequest,
    InvalidLambdaResponse,
    LocalGateway,
    Route,
    RouteMatch,
    TemplateError,
    build_event,
    function_specs,
    load_routes,
    main,
    match_route,
    response_from_result,
)

ROOT = Path(__file__).resolve().parents[2]
PROJECT_TEMPLATE = ROOT / "template.yaml"
HTTP_TIMEOUT = 15
QUEUE_URL = "http://127.0.0.1:5000/123456789012/local-queue.fifo"
QUEUE_ARN = "arn:aws:sqs:ap-south-1:123456789012:local-queue.fifo"
RESOURCES = {"Queue": {"Ref": QUEUE_URL, "Arn": QUEUE_ARN}}

# A small stack of its own: one layer, handlers that echo, misbehave, crash and hang.
FAKE_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Greeting:
    Type: String
    Default: hello
  Limit:
    Type: Number
    Default: 42
  NoDefault:
    Type: String
Globals:
  Function:
    Runtime: python3.13
    Handler: app.handler
    Timeout: 10
    MemorySize: 256
    Layers: [!Ref SharedLayer]
    Environment:
      Variables:
        GREETING: !Ref Greeting
        COLOR: global
Resources:
  SharedLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layer/
  Queue:
    Type: AWS::SQS::Queue
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/echo/
      Environment:
        Variables:
          COLOR: echo
          LIMIT: !Ref Limit
          QUEUE_URL: !Ref Queue
          QUEUE_ARN: !GetAtt Queue.Arn
          LOG_GROUP: !Sub "/aws/lambda/${EchoFunction}"
          PLACE: !Sub "${AWS::Region}/${AWS::AccountId}/${Queue.Arn}/${!Literal}"
          NAMED: !Sub ["${Name}-${Greeting}", {Name: !GetAtt Queue.Arn}]
          DROPPED: !Ref AWS::NoValue
      Events:
        Item:
          Type: HttpApi
          Properties: {Method: GET, Path: "/items/{item}"}
        Echo:
          Type: HttpApi
          Properties: {Method: ANY, Path: /echo}
        Files:
          Type: HttpApi
          Properties: {Method: post, Path: "/files/{proxy+}"}
  OtherFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/other/
      Environment:
        Variables:
          COLOR: other
      Events:
        Other:
          Type: HttpApi
          Properties: {Method: GET, Path: /other}
        Special:
          Type: HttpApi
          Properties: {Method: GET, Path: /items/special}
  ResponsesFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/responses/
      Timeout: 1
      Events:
        Respond:
          Type: HttpApi
          Properties: {Method: GET, Path: "/respond/{kind}"}
  BrokenFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/broken/
      Events:
        Broken:
          Type: HttpApi
          Properties: {Method: GET, Path: /broken}
  QuietFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/other/
      Environment:
        Variables:
          NEEDS: !Ref NoDefault
      Events:
        Nightly:
          Type: Schedule
          Properties: {Schedule: rate(1 day)}
"""

ECHO_APP = """\
import json
import os
import sys
import time

import sharedlib  # from the layer: this import fails unless the layer is on sys.path


def rendezvous(folder):
    # How many requests were inside handlers at once (waits up to 5 s for a second one).
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 5
    while len(os.listdir(folder)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(os.listdir(folder))


def handler(event, context):
    print("a log line from the handler")  # must reach the console, not the gateway's protocol
    together = (event.get("queryStringParameters") or {}).get("together")
    seen = rendezvous(together) if together else 0
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json", "x-function": context.function_name},
        "body": json.dumps({
            "event": event,
            "env": dict(os.environ),
            "sys_path": sys.path,
            "module_file": __file__,
            "layer": sharedlib.MARK,
            "pid": os.getpid(),
            "cwd": os.getcwd(),
            "seen": seen,
            "context": {
                "function_name": context.function_name,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "invoked_function_arn": context.invoked_function_arn,
                "aws_request_id": context.aws_request_id,
                "remaining_ms": context.get_remaining_time_in_millis(),
            },
        }),
    }
"""

RESPONSES_APP = """\
import base64
import os
import time


def handler(event, context):
    kind = event["pathParameters"]["kind"]
    if kind == "cookies":
        return {
            "statusCode": 201,
            "headers": {"x-custom": "yes"},
            "cookies": ["first=1; Path=/", "second=2; HttpOnly"],
            "body": "made",
        }
    if kind == "binary":
        return {
            "statusCode": 200,
            "headers": {"content-type": "application/octet-stream"},
            "body": base64.b64encode(bytes(range(256))).decode(),
            "isBase64Encoded": True,
        }
    if kind == "string":
        return "plain words"
    if kind == "object":
        return {"answer": 42}
    if kind == "raise":
        raise RuntimeError("handler-secret-detail")
    if kind == "crash":
        os._exit(1)
    if kind == "sleep":
        time.sleep(5)
    if kind == "invalid":
        return {"statusCode": 200, "body": {"not": "a string"}}
    return {"statusCode": 200, "body": str(os.getpid())}
"""

BROKEN_APP = 'raise RuntimeError("broken-at-import")\n'


def write_fake_stack(root: Path) -> Path:
    files = {
        "template.yaml": FAKE_TEMPLATE,
        "layer/sharedlib/__init__.py": 'MARK = "from-the-layer"\n',
        "functions/echo/app.py": ECHO_APP,
        "functions/other/app.py": ECHO_APP,
        "functions/responses/app.py": RESPONSES_APP,
        "functions/broken/app.py": BROKEN_APP,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "template.yaml"


@pytest.fixture
def fake_template(tmp_path: Path) -> Path:
    return write_fake_stack(tmp_path / "stack")


@pytest.fixture
def gateway(fake_template: Path) -> Iterator[LocalGateway]:
    with LocalGateway(
        fake_template,
        port=0,
        resources=RESOURCES,
        env_overrides={"OtherFunction": {"COLOR": "other-from-env-file"}},
        extra_env={"EXTRA_FOR_ALL": "extra"},
    ) as running:
        yield running


def get(gateway: LocalGateway, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(gateway.url + path, timeout=HTTP_TIMEOUT, **kwargs)


def echoed(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def process_gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@contextmanager
def gateway_cli(*arguments: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m local.gateway`` with ``arguments``, and the URL its first line names; killed at
    the end if the test left it running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "local.gateway", *arguments],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        found = re.search(r"on (http://127\.0\.0\.1:\d+)$", banner.strip())
        assert found, banner
        yield process, found.group(1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# ---------------------------------------------------------------------------------------------
# Routes


def template_httpapi_events(path: Path) -> set[Route]:
    """The HttpApi events of the template, read with cfn-lint's parser, independently of the gateway."""
    template = cfn_load(str(path))
    events: set[Route] = set()
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event_id, event in (resource.get("Properties", {}).get("Events") or {}).items():
            if event.get("Type") == "HttpApi":
                properties = event.get("Properties") or {}
                method = str(properties.get("Method", "ANY")).upper()
                events.add(Route(logical_id, event_id, method, str(properties.get("Path", "$default"))))
    return events


def concrete_path(route_path: str) -> str:
    path = re.sub(r"\{[^}/]+\+\}", "a/b", route_path)
    return re.sub(r"\{[^}/]+\}", "sample", path)


def test_every_httpapi_event_of_the_project_template_is_a_route() -> None:
    expected = template_httpapi_events(PROJECT_TEMPLATE)
    routes = load_routes(PROJECT_TEMPLATE)
    assert expected
    assert len(routes) == len(set(routes))
    assert set(routes) == expected
    for route in routes:
        method = "GET" if route.method == "ANY" else route.method
        match = match_route(routes, method, concrete_path(route.path))
        assert match is not None
        assert match.route == route


class EveryAttribute(dict[str, str]):
    """A resource's local values with every attribute present, whatever the template asks for."""

    def __init__(self, logical_id: str) -> None:
        super().__init__()
        self.logical_id = logical_id

    def __contains__(self, attribute: object) -> bool:
        return True

    def __missing__(self, attribute: str) -> str:
        return f"local-{self.logical_id}-{attribute}"


def _optional(value: Any) -> bool:
    """An ``!If [condition, value, !Ref AWS::NoValue]`` (either way round)."""
    branches = value.get("Fn::If", [])[1:] if isinstance(value, dict) else []
    return {"Ref": "AWS::NoValue"} in branches


def test_project_functions_load_from_their_code_uri_and_layers() -> None:
    template = cfn_load(str(PROJECT_TEMPLATE))
    resources = {logical_id: EveryAttribute(logical_id) for logical_id in template["Resources"]}
    specs = function_specs(PROJECT_TEMPLATE, resources)
    assert set(specs) == {route.function_id for route in load_routes(PROJECT_TEMPLATE)}
    global_variables = (
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    for function_id, spec in specs.items():
        module = spec.handler.rpartition(".")[0]
        assert (spec.code_uri / (module.replace(".", "/") + ".py")).is_file()
        assert any((layer / "kitehooks" / "__init__.py").is_file() for layer in spec.layers)
        own = template["Resources"][function_id]["Properties"].get("Environment", {}).get("Variables", {})
        # A variable that may be AWS::NoValue (an optional setting) is left out, as Lambda leaves it.
        always = {name for name, value in {**global_variables, **own}.items() if not _optional(value)}
        assert always <= set(spec.environment)
        assert spec.environment["AWS_LAMBDA_FUNCTION_NAME"] == function_id


def test_fake_template_routes_in_template_order(fake_template: Path) -> None:
    routes = load_routes(fake_template)
    assert [(r.function_id, r.method, r.path, r.route_key) for r in routes] == [
        ("EchoFunction", "GET", "/items/{item}", "GET /items/{item}"),
        ("EchoFunction", "ANY", "/echo", "ANY /echo"),
        ("EchoFunction", "POST", "/files/{proxy+}", "POST /files/{proxy+}"),
        ("OtherFunction", "GET", "/other", "GET /other"),
        ("OtherFunction", "GET", "/items/special", "GET /items/special"),
        ("ResponsesFunction", "GET", "/respond/{kind}", "GET /respond/{kind}"),
        ("BrokenFunction", "GET", "/broken", "GET /broken"),
    ]


@pytest.mark.parametrize(
    ("method", "path", "function_id", "route_key", "parameters"),
    [
        ("GET", "/items/special", "OtherFunction", "GET /items/special", {}),
        ("GET", "/items/abc", "EchoFunction", "GET /items/{item}", {"item": "abc"}),
        ("GET", "/items/a%20b", "EchoFunction", "GET /items/{item}", {"item": "a b"}),
        ("DELETE", "/echo", "EchoFunction", "ANY /echo", {}),
        ("POST", "/files/a/b/c.txt", "EchoFunction", "POST /files/{proxy+}", {"proxy": "a/b/c.txt"}),
        ("POST", "/files/", None, None, None),
        ("POST", "/other", None, None, None),
        ("GET", "/items/abc/extra", None, None, None),
        ("GET", "/items/", None, None, None),
        ("GET", "/nowhere", None, None, None),
    ],
)
def test_route_matching(
    fake_template: Path,
    method: str,
    path: str,
    function_id: str | None,
    route_key: str | None,
    parameters: dict[str, str] | None,
) -> None:
    match = match_route(load_routes(fake_template), method, path)
    if function_id is None:
        assert match is None
    else:
        assert match is not None
        assert (match.route.function_id, match.route.route_key, match.path_parameters) == (
            function_id,
            route_key,
            parameters,
        )


def test_most_specific_route_wins_as_in_api_gateway() -> None:
    routes = [
        Route("Default", "E", "ANY", "$default"),
        Route("Greedy", "E", "GET", "/{proxy+}"),
        Route("AnyX", "E", "ANY", "/x"),
        Route("GetX", "E", "GET", "/x"),
        Route("Param", "E", "GET", "/x/{id}"),
    ]

    def chosen(method: str, path: str) -> str:
        match = match_route(routes, method, path)
        assert match is not None
        return match.route.function_id

    assert chosen("GET", "/x") == "GetX"
    assert chosen("POST", "/x") == "AnyX"
    assert chosen("GET", "/x/1") == "Param"
    assert chosen("GET", "/y/z") == "Greedy"
    assert chosen("POST", "/y") == "Default"


# ---------------------------------------------------------------------------------------------
# Environment


def test_environment_resolves_parameters_refs_getatts_and_subs(fake_template: Path) -> None:
    specs = function_specs(fake_template, RESOURCES)
    assert set(specs) == {"EchoFunction", "OtherFunction", "ResponsesFunction", "BrokenFunction"}
    echo = specs["EchoFunction"].environment
    assert echo["GREETING"] == "hello"
    assert echo["COLOR"] == "echo"  # the function's own value wins over Globals
    assert echo["LIMIT"] == "42"
    assert echo["QUEUE_URL"] == QUEUE_URL
    assert echo["QUEUE_ARN"] == QUEUE_ARN
    assert echo["LOG_GROUP"] == "/aws/lambda/EchoFunction"
    assert echo["PLACE"] == f"ap-south-1/123456789012/{QUEUE_ARN}/${{Literal}}"
    assert echo["NAMED"] == f"{QUEUE_ARN}-hello"
    assert "DROPPED" not in echo
    assert echo["AWS_LAMBDA_FUNCTION_NAME"] == "EchoFunction"
    assert echo["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert echo["AWS_REGION"] == "ap-south-1"
    assert specs["OtherFunction"].environment["COLOR"] == "other"
    assert specs["OtherFunction"].environment["GREETING"] == "hello"
    assert specs["EchoFunction"].timeout == 10
    assert specs["ResponsesFunction"].timeout == 1
    assert specs["EchoFunction"].layers == (fake_template.parent.resolve() / "layer",)
    assert specs["EchoFunction"].code_uri == fake_template.parent.resolve() / "functions" / "echo"
    assert (
        specs["EchoFunction"].function_arn == "arn:aws:lambda:ap-south-1:123456789012:function:EchoFunction"
    )


def test_overrides_env_file_and_extra_env(fake_template: Path) -> None:
    specs = function_specs(
        fake_template,
        RESOURCES,
        env_overrides={
            "Parameters": {"COLOR": "everyone", "UNDECLARED": "ignored"},
            "EchoFunction": {"COLOR": "echo-from-file", "LIMIT": 7},
        },
        extra_env={"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:5000"},
        parameter_overrides={"Greeting": "namaste"},
    )
    echo = specs["EchoFunction"].environment
    other = specs["OtherFunction"].environment
    assert echo["COLOR"] == "echo-from-file"
    assert echo["LIMIT"] == "7"
    assert other["COLOR"] == "everyone"
    assert "UNDECLARED" not in echo  # as sam local: only variables the template declares
    assert echo["GREETING"] == other["GREETING"] == "namaste"
    assert echo["NAMED"] == f"{QUEUE_ARN}-namaste"
    assert echo["PLACE"].startswith("eu-west-1/")
    assert echo["AWS_REGION"] == echo["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert echo["AWS_ENDPOINT_URL"] == other["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert specs["EchoFunction"].function_arn.startswith("arn:aws:lambda:eu-west-1:")


def test_unresolvable_value_names_the_function_and_variable(fake_template: Path) -> None:
    with pytest.raises(TemplateError, match=r"EchoFunction: environment variable QUEUE_URL: .*Queue"):
        function_specs(fake_template, resources={})
    with pytest.raises(TemplateError, match=r"QuietFunction: environment variable NEEDS: .*NoDefault"):
        function_specs(fake_template, RESOURCES, function_ids=["QuietFunction"])
    quiet = function_specs(
        fake_template, RESOURCES, function_ids=["QuietFunction"], parameter_overrides={"NoDefault": "given"}
    )
    assert quiet["QuietFunction"].environment["NEEDS"] == "given"


def test_unresolvable_value_is_not_needed_when_the_env_file_sets_it(fake_template: Path) -> None:
    specs = function_specs(
        fake_template,
        RESOURCES,
        env_overrides={"QuietFunction": {"NEEDS": "from-file"}},
        function_ids=["QuietFunction"],
    )
    assert specs["QuietFunction"].environment["NEEDS"] == "from-file"


# ---------------------------------------------------------------------------------------------
# Events


def sam_sample_event() -> dict[str, Any]:
    """What `sam local generate-event apigateway http-api-proxy` prints: the reference event."""
    sam = Path(sys.executable).with_name("sam")
    completed = subprocess.run(
        [str(sam), "local", "generate-event", "apigateway", "http-api-proxy"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
    )
    sample: dict[str, Any] = json.loads(completed.stdout)
    return sample


# Parts API Gateway sends only for features an API without mutual TLS, authorizers or stage
# variables does not have, as the project's HttpApi.
ONLY_WITH_UNUSED_FEATURES = {"requestContext.authentication", "requestContext.authorizer", "stageVariables"}
# Maps whose keys are the request's data, not the format's.
DATA_MAPS = {"headers", "queryStringParameters", "pathParameters"}


def shape_differences(ours: Any, sample: Any, where: str = "") -> list[str]:
    if isinstance(sample, dict):
        if not isinstance(ours, dict):
            return [f"{where}: {type(ours).__name__} where the sample has an object"]
        if where in DATA_MAPS:
            bad = [
                key for key, value in ours.items() if not (isinstance(key, str) and isinstance(value, str))
            ]
            return [f"{where}: {key} is not str -> str" for key in bad]
        differences: list[str] = []
        for key in sorted(sample.keys() | ours.keys()):
            path = f"{where}.{key}" if where else key
            if path in ONLY_WITH_UNUSED_FEATURES:
                if key in ours:
                    differences.append(f"{path} present")
            elif key not in ours:
                differences.append(f"{path} missing")
            elif key not in sample:
                differences.append(f"{path} not in the sample")
            else:
                differences.extend(shape_differences(ours[key], sample[key], path))
        return differences
    if isinstance(sample, list):
        if not isinstance(ours, list):
            return [f"{where}: {type(ours).__name__} where the sample has a list"]
        kinds = {type(item) for item in sample}
        return [
            f"{where}[{i}]: {type(item).__name__}" for i, item in enumerate(ours) if type(item) not in kinds
        ]
    if type(ours) is not type(sample):
        return [f"{where}: {type(ours).__name__} where the sample has {type(sample).__name__}"]
    return []


SAMPLE_ROUTES = [Route("Fn", "Resource", "POST", "/path/to/{parameter1}")]


def request_like_the_sample(sample: dict[str, Any]) -> GatewayRequest:
    return GatewayRequest(
        method="POST",
        raw_path=sample["rawPath"],
        raw_query=sample["rawQueryString"],
        headers=[
            ("Host", "127.0.0.1:3000"),
            ("User-Agent", "agent"),
            ("Header1", "value1"),
            ("Header2", "value1"),
            ("Header2", "value2"),
            ("Cookie", "; ".join(sample["cookies"])),
            ("Content-Type", "application/octet-stream"),
        ],
        body=base64.b64decode(sample["body"]),
        source_ip="192.168.0.1",
        server_port=3000,
    )


def test_event_has_the_shape_of_sam_generate_event() -> None:
    sample = sam_sample_event()
    request = request_like_the_sample(sample)
    match = match_route(SAMPLE_ROUTES, request.method, request.raw_path)
    assert match is not None
    event = build_event(
        request,
        match,
        request_id="JKJaXmPLvHcESHA=",
        epoch_seconds=sample["requestContext"]["timeEpoch"] / 1000,
    )

    assert {path for path in ONLY_WITH_UNUSED_FEATURES if path.split(".")[-1] in json.dumps(sample)} == (
        ONLY_WITH_UNUSED_FEATURES
    )
    assert shape_differences(event, sample) == []
    # Values: what the sample shows for such a request.
    for key in ("version", "rawPath", "rawQueryString", "cookies", "queryStringParameters", "body"):
        assert event[key] == sample[key], key
    assert event["isBase64Encoded"] is sample["isBase64Encoded"] is True
    assert {name.lower(): value for name, value in sample["headers"].items()}.items() <= event[
        "headers"
    ].items()
    context, sample_context = event["requestContext"], sample["requestContext"]
    for key in ("accountId", "stage", "timeEpoch"):
        assert context[key] == sample_context[key], key
    for key in ("method", "path", "protocol", "userAgent"):
        assert context["http"][key] == sample_context["http"][key], key
    assert sample_context["http"]["sourceIp"].startswith(context["http"]["sourceIp"])
    time_format = r"\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000"
    assert re.fullmatch(time_format, sample_context["time"])
    assert context["time"] == "04/Mar/2020:19:03:58 +0000"  # the sample's timeEpoch, in that format
    assert event["routeKey"] == context["routeKey"] == "POST /path/to/{parameter1}"
    assert event["pathParameters"] == {"parameter1": "resource"}
    assert context["requestId"] == "JKJaXmPLvHcESHA="


def test_event_headers_cookies_and_query_follow_the_request() -> None:
    request = GatewayRequest(
        method="GET",
        raw_path="/items/a%2Fb",
        raw_query="token=x%20y&b=1&b=2&flag&empty=",
        headers=[
            ("Host", "example.test:3000"),
            ("X-Repeated", "one"),
            ("x-repeated", "two"),
            ("Cookie", "session=abc; theme=dark"),
            ("Cookie", "extra=1"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
        body=b"",
        source_ip="127.0.0.1",
        server_port=3000,
    )
    match = match_route([Route("Fn", "E", "GET", "/items/{item}")], "GET", request.raw_path)
    assert match is not None
    before = time.time()
    event = build_event(request, match)
    assert event["rawQueryString"] == "token=x%20y&b=1&b=2&flag&empty="
    assert event["queryStringParameters"] == {"token": "x y", "b": "1,2", "flag": "", "empty": ""}
    assert event["cookies"] == ["session=abc", "theme=dark", "extra=1"]
    assert "cookie" not in event["headers"]  # payload 2.0 moves cookies out of the headers
    assert event["headers"]["x-repeated"] == "one,two"
    assert event["headers"]["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert event["headers"]["x-forwarded-port"] == "3000"
    assert event["headers"]["x-forwarded-proto"] == "http"
    assert all(name == name.lower() for name in event["headers"])
    assert event["pathParameters"] == {"item": "a/b"}
    assert event["requestContext"]["domainName"] == "example.test"
    assert event["requestContext"]["domainPrefix"] == "example"
    assert event["requestContext"]["http"]["userAgent"] == ""
    assert before * 1000 - 1 <= event["requestContext"]["timeEpoch"] <= time.time() * 1000 + 1
    assert "body" not in event
    assert event["isBase64Encoded"] is False


def matched(route: Route, method: str, path: str) -> RouteMatch:
    match = match_route([route], method, path)
    assert match is not None
    return match


def test_event_leaves_out_what_the_request_lacks() -> None:
    request = GatewayRequest("GET", "/echo", "", [("Host", "127.0.0.1")], b"", "127.0.0.1", 3000)
    match = matched(Route("Fn", "E", "ANY", "/echo"), "GET", "/echo")
    event = build_event(request, match)
    for key in ("cookies", "queryStringParameters", "pathParameters", "body", "stageVariables"):
        assert key not in event, key
    assert event["isBase64Encoded"] is False
    assert event["routeKey"] == "ANY /echo"
    assert event["requestContext"]["requestId"] != build_event(request, match)["requestContext"]["requestId"]


@pytest.mark.parametrize(
    ("content_type", "body", "base64_encoded"),
    [
        ("application/json", b'{"a": 1}', False),
        ("application/json; charset=utf-8", '{"name": "\u0928\u092e"}'.encode(), False),
        ("text/plain", b"hello", False),
        ("application/x-www-form-urlencoded", b"a=1&b=2", False),
        ("application/xml", b"<a/>", False),
        ("application/vnd.api+json", b"{}", False),
        ("application/octet-stream", b"\x00\x01\xff", True),
        ("image/png", b"\x89PNG", True),
        ("application/json", b"\xff\xfe not utf-8", True),
        (None, b"no content type", True),
    ],
)
def test_event_body_is_base64_unless_text(
    content_type: str | None, body: bytes, base64_encoded: bool
) -> None:
    headers = [("Content-Type", content_type)] if content_type else []
    request = GatewayRequest("POST", "/p", "", headers, body, "127.0.0.1", 3000)
    event = build_event(request, matched(Route("Fn", "E", "POST", "/p"), "POST", "/p"))
    assert event["isBase64Encoded"] is base64_encoded
    decoded = base64.b64decode(event["body"]) if base64_encoded else event["body"].encode()
    assert decoded == body


# ---------------------------------------------------------------------------------------------
# Responses


def test_response_with_status_headers_cookies_and_base64_body() -> None:
    response = response_from_result(
        {
            "statusCode": 302,
            "headers": {"Location": "https://example.test/", "X-Count": 3, "Content-Length": "999"},
            "multiValueHeaders": {"X-Multi": ["a", "b"]},
            "cookies": ["a=1", "b=2; Secure"],
            "body": base64.b64encode(b"\x00\xff").decode(),
            "isBase64Encoded": True,
        }
    )
    assert response.status == 302
    assert ("Location", "https://example.test/") in response.headers
    assert ("X-Count", "3") in response.headers
    assert [value for name, value in response.headers if name == "X-Multi"] == ["a", "b"]
    assert [value for name, value in response.headers if name == "set-cookie"] == ["a=1", "b=2; Secure"]
    assert not any(name.lower() == "content-length" for name, _ in response.headers)
    assert response.body == b"\x00\xff"


@pytest.mark.parametrize(
    ("result", "body"),
    [
        ("plain words", b"plain words"),
        ({"answer": 42}, b'{"answer": 42}'),
        ([1, 2], b"[1, 2]"),
        (None, b"null"),
    ],
)
def test_result_without_status_code_is_a_200_json_body(result: Any, body: bytes) -> None:
    response = response_from_result(result)
    assert (response.status, response.body) == (200, body)
    assert response.headers == [("content-type", "application/json")]


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": "abc"},
        {"statusCode": 99},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "body": "%%%", "isBase64Encoded": True},
        {"statusCode": 200, "headers": {"X-Bad": "a\r\nInjected: 1"}},
        {"statusCode": 200, "cookies": "a=1"},
    ],
)
def test_invalid_results_are_refused(result: dict[str, Any]) -> None:
    with pytest.raises(InvalidLambdaResponse):
        response_from_result(result)


# ---------------------------------------------------------------------------------------------
# Over HTTP


def test_handler_gets_the_event_and_a_lambda_context(gateway: LocalGateway) -> None:
    response = get(gateway, "/items/abc?b=2&b=3&token=x%20y", headers={"Cookie": "session=s1; theme=dark"})
    body = echoed(response)
    event, context = body["event"], body["context"]
    assert event["routeKey"] == "GET /items/{item}"
    assert event["rawPath"] == "/items/abc"
    assert event["rawQueryString"] == "b=2&b=3&token=x%20y"
    assert event["queryStringParameters"] == {"b": "2,3", "token": "x y"}
    assert event["pathParameters"] == {"item": "abc"}
    assert event["cookies"] == ["session=s1", "theme=dark"]
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["requestContext"]["http"]["sourceIp"] == "127.0.0.1"
    assert event["headers"]["user-agent"].startswith("python-requests/")
    assert response.headers["apigw-requestid"] == event["requestContext"]["requestId"]
    assert response.headers["x-function"] == "EchoFunction"
    assert context["function_name"] == "EchoFunction"
    assert context["memory_limit_in_mb"] == "256"
    assert context["invoked_function_arn"] == "arn:aws:lambda:ap-south-1:123456789012:function:EchoFunction"
    assert uuid.UUID(context["aws_request_id"])
    assert 0 < context["remaining_ms"] <= 10_000
    assert body["layer"] == "from-the-layer"


def test_handler_imports_with_only_code_uri_and_layer_on_sys_path(gateway: LocalGateway) -> None:
    body = echoed(get(gateway, "/echo"))
    stack = Path(gateway.functions["EchoFunction"].code_uri).parents[1]
    assert body["sys_path"][:2] == [str(stack / "functions" / "echo"), str(stack / "layer")]
    interpreter_prefixes = (sys.base_prefix, sys.prefix)
    assert all(entry.startswith(interpreter_prefixes) for entry in body["sys_path"][2:]), body["sys_path"]
    assert "" not in body["sys_path"]
    assert str(ROOT) not in body["sys_path"]
    assert body["cwd"] == str(stack / "functions" / "echo")


def test_each_function_has_its_own_environment_and_modules(gateway: LocalGateway) -> None:
    echo = echoed(get(gateway, "/echo"))
    other = echoed(get(gateway, "/other"))
    assert echo["env"]["COLOR"] == "echo"
    assert other["env"]["COLOR"] == "other-from-env-file"
    assert echo["env"]["QUEUE_URL"] == QUEUE_URL
    assert "QUEUE_URL" not in other["env"]
    assert echo["env"]["EXTRA_FOR_ALL"] == other["env"]["EXTRA_FOR_ALL"] == "extra"
    assert "PYTEST_CURRENT_TEST" not in echo["env"]  # nothing leaks from the gateway's environment
    assert echo["module_file"].endswith("functions/echo/app.py")
    assert other["module_file"].endswith("functions/other/app.py")
    assert echo["pid"] != other["pid"]


def test_workers_stay_warm_between_requests(gateway: LocalGateway) -> None:
    first = echoed(get(gateway, "/echo"))
    second = echoed(get(gateway, "/items/xyz"))
    assert first["pid"] == second["pid"]
    assert gateway.worker_pids() == [first["pid"]]


def test_concurrent_requests_run_in_separate_workers(gateway: LocalGateway, tmp_path: Path) -> None:
    # Each request waits inside the handler until both are there: only separate workers get both in.
    query = {"together": str(tmp_path / "together")}
    with ThreadPoolExecutor(max_workers=2) as pool:
        bodies = list(pool.map(lambda _: echoed(get(gateway, "/echo", params=query)), range(2)))
    assert [body["seen"] for body in bodies] == [2, 2]
    assert bodies[0]["pid"] != bodies[1]["pid"]
    assert sorted(gateway.worker_pids()) == sorted(body["pid"] for body in bodies)


def test_routes_over_http(gateway: LocalGateway) -> None:
    assert get(gateway, "/items/special").headers["x-function"] == "OtherFunction"
    deleted = requests.delete(gateway.url + "/echo", timeout=HTTP_TIMEOUT)
    assert echoed(deleted)["event"]["routeKey"] == "ANY /echo"
    posted = requests.post(gateway.url + "/files/a/b/c.txt", data=b"{}", timeout=HTTP_TIMEOUT)
    assert echoed(posted)["event"]["pathParameters"] == {"proxy": "a/b/c.txt"}
    for response in (
        get(gateway, "/nowhere?token=t"),
        requests.post(gateway.url + "/other", timeout=HTTP_TIMEOUT),
    ):
        assert response.status_code == 404
        assert response.json() == {"message": "Not Found"}


def test_cookies_status_and_headers_of_the_response(gateway: LocalGateway) -> None:
    response = get(gateway, "/respond/cookies")
    assert response.status_code == 201
    assert response.headers["x-custom"] == "yes"
    assert response.raw.headers.getlist("Set-Cookie") == ["first=1; Path=/", "second=2; HttpOnly"]
    assert response.cookies.get("first") == "1"
    assert response.text == "made"


def test_base64_response_body_is_decoded(gateway: LocalGateway) -> None:
    response = get(gateway, "/respond/binary")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == bytes(range(256))


def test_results_without_status_code_over_http(gateway: LocalGateway) -> None:
    text = get(gateway, "/respond/string")
    assert (text.status_code, text.text, text.headers["content-type"]) == (
        200,
        "plain words",
        "application/json",
    )
    data = get(gateway, "/respond/object")
    assert (data.status_code, data.json()) == (200, {"answer": 42})


def test_binary_request_body_reaches_the_handler_base64(gateway: LocalGateway) -> None:
    payload = bytes(range(256))
    response = requests.post(
        gateway.url + "/files/upload.bin",
        data=payload,
        headers={"Content-Type": "application/octet-stream"},
        timeout=HTTP_TIMEOUT,
    )
    event = echoed(response)["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload
    text = requests.post(gateway.url + "/files/note.json", json={"a": "b"}, timeout=HTTP_TIMEOUT)
    assert echoed(text)["event"]["isBase64Encoded"] is False
    assert json.loads(echoed(text)["event"]["body"]) == {"a": "b"}


def test_handler_exception_is_502_with_the_traceback_on_the_console_only(
    gateway: LocalGateway, capfd: pytest.CaptureFixture[str]
) -> None:
    before = get(gateway, "/respond/pid").text
    response = get(gateway, "/respond/raise")
    assert response.status_code == 502
    assert response.json() == {"message": "Internal Server Error"}
    assert "handler-secret-detail" not in response.text
    assert get(gateway, "/respond/pid").text == before  # an exception does not end the worker
    err = capfd.readouterr().err
    assert "RuntimeError: handler-secret-detail" in err
    assert "Traceback" in err
    assert "ResponsesFunction: the handler raised RuntimeError" in err


def test_crashed_worker_is_replaced(gateway: LocalGateway, capfd: pytest.CaptureFixture[str]) -> None:
    before = int(get(gateway, "/respond/pid").text)
    crashed = get(gateway, "/respond/crash")
    assert crashed.status_code == 502
    assert crashed.json() == {"message": "Internal Server Error"}
    assert process_gone(before)
    after = get(gateway, "/respond/pid")
    assert after.status_code == 200
    assert int(after.text) != before
    assert "exited with code 1" in capfd.readouterr().err


def test_timeout_is_502_and_the_worker_is_replaced(gateway: LocalGateway) -> None:
    before = int(get(gateway, "/respond/pid").text)
    started = time.monotonic()
    response = get(gateway, "/respond/sleep")
    elapsed = time.monotonic() - started
    assert response.status_code == 502
    assert response.json() == {"message": "Internal Server Error"}
    assert 0.9 <= elapsed < 4  # the function's Timeout is 1 s; the handler sleeps 5
    assert process_gone(before)
    assert int(get(gateway, "/respond/pid").text) != before


def test_handler_that_cannot_load_is_502(gateway: LocalGateway, capfd: pytest.CaptureFixture[str]) -> None:
    response = get(gateway, "/broken")
    assert response.status_code == 502
    assert "broken-at-import" not in response.text
    assert "RuntimeError: broken-at-import" in capfd.readouterr().err
    assert get(gateway, "/broken").status_code == 502  # tried again with a new worker, same result


def test_invalid_result_is_502(gateway: LocalGateway) -> None:
    response = get(gateway, "/respond/invalid")
    assert response.status_code == 502
    assert response.json() == {"message": "Internal Server Error"}


def test_access_log_line_without_query_string(
    gateway: LocalGateway, capfd: pytest.CaptureFixture[str]
) -> None:
    get(gateway, "/echo?access_token=tok-5ecret")
    get(gateway, "/nowhere?request_token=tok-5ecret")
    err = capfd.readouterr().err
    assert re.search(r"^GET /echo 200 \d+ ms$", err, re.MULTILINE)
    assert re.search(r"^GET /nowhere 404 \d+ ms$", err, re.MULTILINE)
    assert "a log line from the handler" in err  # handler prints go to the console
    assert "tok-5ecret" not in err


def test_stop_ends_every_worker_process(fake_template: Path) -> None:
    gateway = LocalGateway(fake_template, port=0, resources=RESOURCES)
    gateway.start()
    try:
        pids = {echoed(get(gateway, "/echo"))["pid"], echoed(get(gateway, "/other"))["pid"]}
        pids.add(int(get(gateway, "/respond/pid").text))
        assert set(gateway.worker_pids()) == pids
        assert len(pids) == 3
        url = gateway.url
    finally:
        gateway.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert gateway.worker_pids() == []
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/echo", timeout=2)


def test_port_in_use_is_a_clear_error(fake_template: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(GatewayError, match="already in use"):
            LocalGateway(fake_template, port=port, resources=RESOURCES).start()
        resources_file = fake_template.with_name("resources.json")
        resources_file.write_text(json.dumps(RESOURCES), encoding="utf-8")
        code = main(
            ["--template", str(fake_template), "--port", str(port), "--resources", str(resources_file)]
        )
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"127.0.0.1:{port} is already in use" in err


def test_cli_reads_its_files_serves_and_stops_on_sigterm(fake_template: Path, tmp_path: Path) -> None:
    resources_file = tmp_path / "resources.json"
    resources_file.write_text(json.dumps(RESOURCES), encoding="utf-8")
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"OtherFunction": {"COLOR": "from-env-file"}}), encoding="utf-8")
    arguments = ["--template", str(fake_template), "--port", "0", "--resources", str(resources_file)]
    arguments += ["--env-vars", str(env_file), "--env", "EXTRA_FOR_ALL=cli"]
    with gateway_cli(*arguments) as (process, url):
        body = echoed(requests.get(url + "/other", timeout=HTTP_TIMEOUT))
        assert body["env"]["COLOR"] == "from-env-file"
        assert body["env"]["EXTRA_FOR_ALL"] == "cli"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process_gone(body["pid"])


def test_conditions_and_if_resolve_with_the_local_parameter_values() -> None:
    resources = {
        "OrderUpdatesQueue": {"Ref": "q"},
        "UndeliveredPostbacksBucket": {"Ref": "b"},
        "ApiCredentialsSecret": {"Ref": "s"},
        "LoginStatesTable": {"Ref": "t"},
        "OrderLedgerTable": {"Ref": "ledger", "Arn": "arn:ledger"},
    }
    default = function_specs(PROJECT_TEMPLATE, resources, stack_name="mystack")
    assert default["CallbackFunction"].environment["SESSION_PREFIX"] == "mystack/sessions"
    chosen = function_specs(
        PROJECT_TEMPLATE,
        resources,
        parameter_overrides={"SessionPrefix": "desk/sessions"},
        stack_name="mystack",
    )
    assert chosen["CallbackFunction"].environment["SESSION_PREFIX"] == "desk/sessions"
    # OrderConfirmation: on by default (the postback path records to the ledger), off leaves it empty.
    assert default["PostbackFunction"].environment["ORDER_LEDGER_TABLE"] == "ledger"
    off = function_specs(
        PROJECT_TEMPLATE, resources, parameter_overrides={"OrderConfirmation": "off"}, stack_name="mystack"
    )
    assert off["PostbackFunction"].environment["ORDER_LEDGER_TABLE"] == ""
