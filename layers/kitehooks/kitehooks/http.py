"""API Gateway HTTP API (payload format 2.0) in and out, for the postback path.

Written by hand rather than with Powertools' Event Handler: the postback function serves one
route, and the Event Handler's import alone costs about 60 ms, some 15% of the cold-start floor
of ``boto3`` plus an SQS client. These few dictionary reads are all the route needs.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict


class HttpRequestContext(TypedDict):
    requestId: str
    http: dict[str, str]
    timeEpoch: NotRequired[int]


class HttpApiEvent(TypedDict):
    """The parts of a payload 2.0 event the postback path reads."""

    requestContext: HttpRequestContext
    body: NotRequired[str]
    isBase64Encoded: NotRequired[bool]


class HttpApiResponse(TypedDict):
    statusCode: int
    headers: dict[str, str]
    body: str


class BodyNotDecodable(ValueError):
    pass


def json_response(
    status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> HttpApiResponse:
    return {
        "statusCode": status_code,
        "headers": {"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
    }


def request_method(event: HttpApiEvent) -> str:
    return event["requestContext"]["http"]["method"].upper()


def request_id(event: HttpApiEvent) -> str:
    return event["requestContext"]["requestId"]


def received_at(event: HttpApiEvent) -> datetime:
    """When API Gateway received the request (its ``timeEpoch``, in ms), else now: the order in
    which Kite's updates arrived, whatever each invocation then waited for. A value that is not
    a plausible time (not an int, more than a day from now) counts as now."""
    now = datetime.now(UTC)
    epoch_ms = event["requestContext"].get("timeEpoch")
    if type(epoch_ms) is not int or abs(epoch_ms / 1000 - now.timestamp()) > _PLAUSIBLE_SECONDS:
        return now
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


_PLAUSIBLE_SECONDS = 86_400


def raw_body(event: HttpApiEvent) -> bytes:
    """The request body as the client sent it, undoing API Gateway's base64 when it applied one."""
    body = event.get("body")
    if body is None:
        return b""
    if not event.get("isBase64Encoded"):
        return body.encode("utf-8")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BodyNotDecodable("body is flagged base64 but is not valid base64") from None
