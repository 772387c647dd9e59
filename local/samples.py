"""Kite-shaped sample payloads, signed with whatever api_secret the caller uses.

The order is Kite's documented postback example; ``make postback``, the tests and ``events/``
all start from it, so they agree with each other and with Kite.
"""

from __future__ import annotations

import json
from typing import Any

from kitehooks.checksum import postback_checksum
from local.kite_simulator import DEFAULT_API_KEY as LOCAL_API_KEY
from local.kite_simulator import DEFAULT_API_SECRET as LOCAL_API_SECRET

__all__ = ["LOCAL_API_KEY", "LOCAL_API_SECRET", "http_api_event", "postback_body", "postback_order"]

KITE_POSTBACK_EXAMPLE: dict[str, Any] = {
    "user_id": "AB1234",
    "unfilled_quantity": 0,
    "app_id": 1234,
    "checksum": "",
    "placed_by": "AB1234",
    "order_id": "220303000308932",
    "exchange_order_id": "1000000001482421",
    "parent_order_id": None,
    "status": "COMPLETE",
    "status_message": None,
    "status_message_raw": None,
    "order_timestamp": "2022-03-03 09:24:25",
    "exchange_update_timestamp": "2022-03-03 09:24:25",
    "exchange_timestamp": "2022-03-03 09:24:25",
    "variety": "regular",
    "exchange": "NSE",
    "tradingsymbol": "SBIN",
    "instrument_token": 779521,
    "order_type": "MARKET",
    "transaction_type": "BUY",
    "validity": "DAY",
    "product": "CNC",
    "quantity": 1,
    "disclosed_quantity": 0,
    "price": 0,
    "trigger_price": 0,
    "average_price": 470,
    "filled_quantity": 1,
    "pending_quantity": 0,
    "cancelled_quantity": 0,
    "market_protection": 0,
    "meta": {},
    "tag": None,
    "guid": "XXXXXX",
}


def postback_order(api_secret: str, **fields: Any) -> dict[str, Any]:
    """Kite's example order with ``fields`` changed, and its checksum computed over the result."""
    order = {**KITE_POSTBACK_EXAMPLE, **fields}
    order["checksum"] = postback_checksum(str(order["order_id"]), str(order["order_timestamp"]), api_secret)
    return order


def postback_body(api_secret: str, **fields: Any) -> bytes:
    """The raw body Kite would POST: compact JSON, as Kite sends it."""
    return json.dumps(postback_order(api_secret, **fields), separators=(",", ":")).encode("utf-8")


def http_api_event(
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    cookies: list[str] | None = None,
    base64_body: bool | None = None,
    request_id: str = "sample-request-id",
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event as the route ``method path`` receives it.

    Like API Gateway, a body that is not UTF-8 text is base64-encoded unless ``base64_body`` says.
    """
    import base64
    from urllib.parse import parse_qsl

    if base64_body is None:
        try:
            (body or b"").decode("utf-8")
            base64_body = False
        except UnicodeDecodeError:
            base64_body = True

    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"content-type": "application/json", "user-agent": "kitehooks-sample", **(headers or {})},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "kitehooks-sample",
            },
            "requestId": request_id,
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": "03/Mar/2022:03:54:25 +0000",
            "timeEpoch": 1646279665000,
        },
        "isBase64Encoded": base64_body,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        params: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value
        event["queryStringParameters"] = params
    if body is not None:
        event["body"] = base64.b64encode(body).decode("ascii") if base64_body else body.decode("utf-8")
    return event
