"""Lambda's Invoke API on the local gateway's port, as ``sam local start-lambda`` serves it.

``POST /2015-03-31/functions/{FunctionName}/invocations`` runs the function's handler in the warm
workers the gateway keeps for it, so ``boto3.client("lambda").invoke(...)`` with
``AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:3000`` reaches every function of the template,
those without an HttpApi route (SessionFunction) included. The payload is the event, as is.

- ``FunctionName``: the logical id (the name functions run under locally, as with ``sam local``),
  a partial ARN (``123456789012:function:Name``) or the full ARN, optionally qualified ``$LATEST``
  (``Name:$LATEST`` or ``?Qualifier=$LATEST``); nothing else is deployed locally.
- ``X-Amz-Invocation-Type``: ``RequestResponse`` (default: 200 with the handler's result as JSON),
  ``Event`` (202 at once; the handler runs in the background, its outcome goes to the console;
  Lambda's two retries of a failed asynchronous invocation are not made), ``DryRun`` (204).
- Errors as Lambda answers them: ``x-amzn-ErrorType`` and a JSON ``{"Type", "Message"}`` body for
  the API's own (404 ResourceNotFoundException, 400 InvalidRequestContentException, 413
  RequestTooLargeException, ...); 200 with ``X-Amz-Function-Error: Unhandled`` and
  ``{"errorMessage", "errorType", "requestId", "stackTrace"}`` for a handler that raised, crashed
  or timed out.
- Not served: versions and aliases, ``X-Amz-Log-Type: Tail`` (the handler's logs go to the
  gateway's console), and every other Lambda operation (answered UnknownOperationException).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from local.gateway.console import _console
from local.gateway.events import GatewayRequest, HttpResponse
from local.gateway.functions import DEFAULT_ACCOUNT_ID, DEFAULT_REGION, FunctionSpec, function_specs
from local.gateway.template import TemplateError, load_template
from local.gateway.workers import _GatewayClosed, _HandlerRaised, _InvocationFailed

if TYPE_CHECKING:
    from local.gateway.server import LocalGateway

__all__ = ["INVOKE_PATH_PREFIX", "invoke_api_response", "is_invoke_request", "unrouted_functions"]

INVOKE_PATH_PREFIX = "/2015-03-31/functions/"
_INVOCATIONS = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
# arn:aws:lambda:region:account:function:Name[:Qualifier], account:function:Name[:Qualifier],
# Name[:Qualifier]: the forms Lambda's FunctionName accepts.
_FUNCTION_NAME = re.compile(
    r"^(?:(?:arn:(?P<partition>[\w-]+):lambda:(?P<region>[\w-]+):)?(?P<account>\d{12}):function:)?"
    r"(?P<function>[A-Za-z0-9_-]{1,140})(?::(?P<qualifier>[A-Za-z0-9$_-]{1,128}))?$"
)
LATEST = "$LATEST"
# Lambda's payload limits: 6 MB for a synchronous invocation, 1 MB for an asynchronous one.
MAX_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024
MAX_ASYNC_PAYLOAD_BYTES = 1024 * 1024
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")


def unrouted_functions(
    template_path: str | Path,
    routed: Mapping[str, FunctionSpec],
    resources: Mapping[str, Mapping[str, str]] | None,
    env_overrides: Mapping[str, Mapping[str, Any]] | None,
    extra_env: Mapping[str, str] | None,
    parameter_overrides: Mapping[str, str] | None,
) -> tuple[dict[str, FunctionSpec], dict[str, str]]:
    """The template's functions that have no route: those whose environment resolves locally, and
    for the others why not (an Invoke answers with the reason rather than the stack failing)."""
    template = load_template(template_path)
    invocable: dict[str, FunctionSpec] = {}
    unavailable: dict[str, str] = {}
    for logical_id, resource in template["Resources"].items():
        if logical_id in routed or not isinstance(resource, dict):
            continue
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        try:
            invocable.update(
                function_specs(
                    template_path,
                    resources,
                    env_overrides,
                    extra_env,
                    parameter_overrides=parameter_overrides,
                    function_ids=[logical_id],
                )
            )
        except TemplateError as error:
            unavailable[logical_id] = str(error)
    return invocable, unavailable


def is_invoke_request(request: GatewayRequest) -> bool:
    return request.raw_path.startswith(INVOKE_PATH_PREFIX)


def invoke_api_response(gateway: LocalGateway, request: GatewayRequest) -> HttpResponse:
    """Lambda's answer to one Invoke API request."""
    request_id = _request_id()
    found = _INVOCATIONS.match(request.raw_path)
    if found is None or request.method.upper() != "POST":
        return _api_error(
            400,
            "UnknownOperationException",
            "the local stack serves only Invoke: POST /2015-03-31/functions/{FunctionName}/invocations",
            request_id,
        )
    headers = {name.lower(): value for name, value in request.headers}
    query = dict(parse_qsl(request.raw_query, keep_blank_values=True))
    name = unquote(found.group("name"))
    function_id = _function_id(gateway, name, query.get("Qualifier"))
    if function_id is None:
        return _api_error(
            404, "ResourceNotFoundException", f"Function not found: {_arn(gateway, name)}", request_id
        )
    if function_id in gateway.unavailable_functions:
        reason = gateway.unavailable_functions[function_id]
        return _api_error(502, "ResourceNotReadyException", f"cannot run locally: {reason}", request_id)

    invocation_type = headers.get("x-amz-invocation-type", "RequestResponse")
    if invocation_type not in INVOCATION_TYPES:
        return _api_error(
            400,
            "InvalidParameterValueException",
            f"X-Amz-Invocation-Type must be one of {', '.join(INVOCATION_TYPES)}",
            request_id,
        )
    limit = MAX_ASYNC_PAYLOAD_BYTES if invocation_type == "Event" else MAX_SYNC_PAYLOAD_BYTES
    if len(request.body) > limit:
        return _api_error(
            413,
            "RequestTooLargeException",
            f"Request must be smaller than {limit} bytes for the {invocation_type} invocation type",
            request_id,
        )
    try:
        event = json.loads(request.body) if request.body.strip() else {}
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError alike
        return _api_error(
            400,
            "InvalidRequestContentException",
            f"Could not parse request body into json: {error}",
            request_id,
        )

    if invocation_type == "DryRun":
        return HttpResponse(204, [("x-amzn-RequestId", request_id)], b"")
    if invocation_type == "Event":
        threading.Thread(
            target=_invoke_in_background,
            args=(gateway, function_id, event, request_id),
            name=f"invoke-{function_id}",
            daemon=True,
        ).start()
        return HttpResponse(202, [("x-amzn-RequestId", request_id)], b"")
    return _invoke(gateway, function_id, event, request_id)


def _function_id(gateway: LocalGateway, name: str, qualifier: str | None) -> str | None:
    """The logical id of the function ``name`` designates, if it is one of the local stack's."""
    parts = _FUNCTION_NAME.match(name)
    if parts is None:
        return None
    function_id = parts.group("function")
    spec = gateway.functions.get(function_id)
    if spec is None and function_id not in gateway.unavailable_functions:
        return None
    # Only $LATEST exists locally, and an ARN must name this stack's region and account.
    if {parts.group("qualifier"), qualifier} - {None, LATEST}:
        return None
    if spec is not None and parts.group("account"):
        _, _, _, region, account, _ = spec.function_arn.split(":", 5)
        if parts.group("account") != account or parts.group("region") not in (None, region):
            return None
    return function_id


def _arn(gateway: LocalGateway, name: str) -> str:
    """The ARN Lambda's "Function not found" message names."""
    if name.startswith("arn:"):
        return name
    spec = next(iter(gateway.functions.values()), None)
    region, account = spec.function_arn.split(":")[3:5] if spec else (DEFAULT_REGION, DEFAULT_ACCOUNT_ID)
    return f"arn:aws:lambda:{region}:{account}:function:{name.rsplit(':function:', 1)[-1]}"


def _invoke(gateway: LocalGateway, function_id: str, event: Any, request_id: str) -> HttpResponse:
    started = time.monotonic()
    try:
        result = gateway.invoke_function(function_id, event)
    except _GatewayClosed:
        return _api_error(503, "ServiceException", "the local stack is stopping", request_id)
    except _InvocationFailed as failure:
        _console(f"{function_id}: {failure}")
        return _function_error(_failure_body(gateway, function_id, failure, started, request_id), request_id)
    body = json.dumps(result).encode("utf-8")
    if len(body) > MAX_SYNC_PAYLOAD_BYTES:
        too_large = {
            "errorMessage": f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload "
            f"size ({MAX_SYNC_PAYLOAD_BYTES} bytes).",
            "errorType": "Function.ResponseSizeTooLarge",
        }
        return _function_error(too_large, request_id)
    return HttpResponse(200, [*_json_headers(request_id), ("X-Amz-Executed-Version", LATEST)], body)


def _invoke_in_background(gateway: LocalGateway, function_id: str, event: Any, request_id: str) -> None:
    started = time.monotonic()
    try:
        gateway.invoke_function(function_id, event)
    except _GatewayClosed:
        return  # the stack stopped before the event ran, as a deleted function's would not
    except _InvocationFailed as failure:
        outcome = f"failed: {failure}"
    except Exception as error:  # a background thread has nobody else to tell
        outcome = f"failed in the local stack: {type(error).__name__}"
    else:
        outcome = "done"
    elapsed_ms = (time.monotonic() - started) * 1000
    _console(f"{function_id} (Event {request_id}) {outcome} {elapsed_ms:.0f} ms")


def _failure_body(
    gateway: LocalGateway, function_id: str, failure: _InvocationFailed, started: float, request_id: str
) -> dict[str, Any]:
    if isinstance(failure, _HandlerRaised):
        return {
            "errorMessage": failure.error_message,
            "errorType": failure.error_type,
            "requestId": request_id,
            "stackTrace": failure.stack_trace,
        }
    timeout = gateway.functions[function_id].timeout
    if time.monotonic() - started >= timeout:
        return {
            "errorMessage": f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds",
            "errorType": "Sandbox.Timedout",
        }
    return {"errorMessage": f"RequestId: {request_id} Error: {failure}", "errorType": "Runtime.ExitError"}


def _json_headers(request_id: str) -> list[tuple[str, str]]:
    return [("content-type", "application/json"), ("x-amzn-RequestId", request_id)]


def _function_error(body: dict[str, Any], request_id: str) -> HttpResponse:
    headers = [*_json_headers(request_id), ("X-Amz-Function-Error", "Unhandled")]
    headers.append(("X-Amz-Executed-Version", LATEST))
    return HttpResponse(200, headers, json.dumps(body).encode("utf-8"))


def _api_error(status: int, error_type: str, message: str, request_id: str) -> HttpResponse:
    kind = "User" if status < 500 else "Service"
    body = json.dumps({"Type": kind, "Message": message}).encode("utf-8")
    return HttpResponse(status, [*_json_headers(request_id), ("x-amzn-ErrorType", error_type)], body)


def _request_id() -> str:
    return str(uuid.uuid4())
