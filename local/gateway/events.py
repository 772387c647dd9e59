"""Events and responses, payload format 2.0: a request as API Gateway hands it to a handler,
and a handler's result as API Gateway answers with it."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from local.gateway.functions import DEFAULT_ACCOUNT_ID
from local.gateway.routes import RouteMatch

LOCAL_API_ID = "local"
_TEXT_MEDIA_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/xml",
        "application/x-www-form-urlencoded",
        "application/yaml",
        "application/x-yaml",
    }
)
# Framing is the gateway's job: a handler's values for these would corrupt the response.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class InvalidLambdaResponse(ValueError):
    """The handler returned something API Gateway would refuse to turn into a response."""


@dataclass(frozen=True)
class GatewayRequest:
    """An HTTP request as received: ``raw_path`` and ``raw_query`` exactly as on the wire."""

    method: str
    raw_path: str
    raw_query: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    source_ip: str
    server_port: int
    protocol: str = "HTTP/1.1"


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def new_request_id() -> str:
    """An id shaped like API Gateway's (e.g. ``JKJaXmPLvHcESHA=``)."""
    return base64.b64encode(secrets.token_bytes(11)).decode("ascii")


def _request_time(epoch_seconds: float) -> str:
    # Month names fixed here: strftime's %b follows the locale, API Gateway's do not.
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return f"{moment:%d}/{_MONTHS[moment.month - 1]}/{moment:%Y:%H:%M:%S} +0000"


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return (
        media_type.startswith("text/")
        or media_type in _TEXT_MEDIA_TYPES
        or media_type.endswith(("+json", "+xml"))
    )


def _event_body(body: bytes, content_type: str | None) -> tuple[str, bool]:
    if _is_text(content_type):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def _query_parameters(raw_query: str) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        parameters[name] = f"{parameters[name]},{value}" if name in parameters else value
    return parameters


def build_event(
    request: GatewayRequest,
    match: RouteMatch,
    *,
    request_id: str | None = None,
    epoch_seconds: float | None = None,
    api_id: str = LOCAL_API_ID,
    account_id: str = DEFAULT_ACCOUNT_ID,
    forwarded_proto: str = "http",
) -> dict[str, Any]:
    """The API Gateway HTTP API (payload format 2.0) event for ``request`` on ``match``.

    Like API Gateway: header names lower-case, repeated headers and query parameters joined with
    ",", cookies moved from the Cookie header to ``cookies``, x-forwarded-* added; ``cookies``,
    ``queryStringParameters``, ``pathParameters`` and ``body`` left out when there are none; the
    body base64-encoded unless its content type is text and it is valid UTF-8.
    """
    now = time.time() if epoch_seconds is None else epoch_seconds
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    forwarded_for = headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = (
        f"{forwarded_for}, {request.source_ip}" if forwarded_for else request.source_ip
    )
    headers["x-forwarded-port"] = str(request.server_port)
    headers["x-forwarded-proto"] = forwarded_proto  # deployed API Gateway: always https
    headers.setdefault("x-amzn-trace-id", f"Root=1-{int(now):08x}-{secrets.token_hex(12)}")

    host = headers.get("host", "localhost")
    domain_name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    route_key = match.route.route_key
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.raw_path,
        "rawQueryString": request.raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    query_parameters = _query_parameters(request.raw_query)
    if query_parameters:
        event["queryStringParameters"] = query_parameters
    event["requestContext"] = {
        "accountId": account_id,
        "apiId": api_id,
        "domainName": domain_name,
        "domainPrefix": domain_name.split(".", 1)[0],
        "http": {
            "method": request.method.upper(),
            "path": request.raw_path,
            "protocol": request.protocol,
            "sourceIp": request.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id or new_request_id(),
        "routeKey": route_key,
        "stage": "$default",
        "time": _request_time(now),
        "timeEpoch": int(now * 1000),
    }
    if match.path_parameters:
        event["pathParameters"] = dict(match.path_parameters)
    is_base64_encoded = False
    if request.body:
        event["body"], is_base64_encoded = _event_body(request.body, headers.get("content-type"))
    event["isBase64Encoded"] = is_base64_encoded
    return event


def _header_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (str, int, float)):
        text = str(value)
    else:
        raise InvalidLambdaResponse(f"header {name} has a {type(value).__name__} value")
    if "\r" in text or "\n" in text or "\r" in name or "\n" in name:
        raise InvalidLambdaResponse(f"header {name!r} contains a line break")
    return text


def response_from_result(result: Any) -> HttpResponse:
    """The HTTP response API Gateway makes of a handler's result (payload format 2.0).

    A dict with ``statusCode`` gives status, ``headers`` (and ``multiValueHeaders``), ``cookies``
    (one Set-Cookie each) and ``body`` (base64-decoded when ``isBase64Encoded``). Anything else is
    the body of a 200 application/json response: a string as is, other values as JSON.
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        text = result if isinstance(result, str) else json.dumps(result)
        return HttpResponse(200, [("content-type", "application/json")], text.encode("utf-8"))
    status = result["statusCode"]
    try:
        if isinstance(status, bool) or not isinstance(status, (int, str)):
            raise ValueError
        status_code = int(status)
    except ValueError:
        raise InvalidLambdaResponse(f"statusCode {status!r} is not an integer") from None
    if not 100 <= status_code <= 599:
        raise InvalidLambdaResponse(f"statusCode {status_code} is not an HTTP status")
    headers: list[tuple[str, str]] = []
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise InvalidLambdaResponse("headers and multiValueHeaders must be objects")
    for name, value in single.items():
        headers.append((str(name), _header_text(str(name), value)))
    for name, values in multi.items():
        if not isinstance(values, list):
            raise InvalidLambdaResponse(f"multiValueHeaders {name} must be a list")
        headers.extend((str(name), _header_text(str(name), value)) for value in values)
    cookies = result.get("cookies") or []
    if not isinstance(cookies, list) or not all(isinstance(cookie, str) for cookie in cookies):
        raise InvalidLambdaResponse("cookies must be a list of strings")
    headers.extend(("set-cookie", _header_text("set-cookie", cookie)) for cookie in cookies)
    body = result.get("body")
    if body is None:
        payload = b""
    elif not isinstance(body, str):
        raise InvalidLambdaResponse(f"body must be a string, not {type(body).__name__}")
    elif result.get("isBase64Encoded"):
        try:
            payload = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidLambdaResponse("isBase64Encoded is true but body is not base64") from None
    else:
        payload = body.encode("utf-8")
    headers = [(name, value) for name, value in headers if name.lower() not in _FRAMING_HEADERS]
    return HttpResponse(status_code, headers, payload)


def _json_message(status: int, message: str) -> HttpResponse:
    body = json.dumps({"message": message}, separators=(",", ":")).encode("utf-8")
    return HttpResponse(status, [("content-type", "application/json")], body)
