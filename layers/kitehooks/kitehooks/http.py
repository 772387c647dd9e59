"""Small pieces of API Gateway HTTP API (payload 2.0) handling shared by the handlers."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types


def json_response(
    status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[str]:
    return Response(
        status_code=status_code,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body, separators=(",", ":")),
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


class BodyNotDecodable(ValueError):
    pass


def raw_body(body: str | None, is_base64_encoded: bool) -> bytes:
    """The request body as the client sent it, undoing API Gateway's base64 when it applied one."""
    if body is None:
        return b""
    if not is_base64_encoded:
        return body.encode("utf-8")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BodyNotDecodable("body is flagged base64 but is not valid base64") from None
