"""Kite-shaped sample payloads, signed with whatever api_secret the caller uses.

The order is Kite's documented postback example; ``make postback``, the tests and ``events/``
all start from it, so they agree with each other and with Kite.
"""

from __future__ import annotations

import json
from typing import Any

from kitehooks.kite.checksum import postback_checksum
from local.kite_simulator import DEFAULT_API_SECRET as LOCAL_API_SECRET

__all__ = ["LOCAL_API_SECRET", "http_api_event", "postback_body", "postback_order"]

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
    """The payload 2.0 event that deployed API Gateway (HTTPS) gives the route ``method path``.

    Built by the local gateway's own event builder, so samples, tests and ``make dev`` agree.
    Like API Gateway, a body that is not UTF-8 text is base64-encoded; ``base64_body=True``
    encodes any body, as API Gateway does for a binary content type.
    """
    import base64

    from local.gateway import GatewayRequest, Route, RouteMatch, build_event

    request_headers = [
        ("host", "kitehooks.example"),
        ("content-type", "application/json"),
        ("user-agent", "kitehooks-sample"),
        ("x-amzn-trace-id", "Root=1-621e7b51-000000000000000000000000"),
        *(headers or {}).items(),
    ]
    if cookies:
        request_headers.append(("cookie", "; ".join(cookies)))
    request = GatewayRequest(
        method=method,
        raw_path=path,
        raw_query=query,
        headers=request_headers,
        body=body or b"",
        source_ip="203.0.113.10",
        server_port=443,
    )
    event = build_event(
        request,
        RouteMatch(Route("SampleFunction", "Sample", method, path), {}),
        request_id=request_id,
        epoch_seconds=1646279665.0,
        forwarded_proto="https",
    )
    if base64_body and not event["isBase64Encoded"]:
        event["body"] = base64.b64encode(body or b"").decode("ascii")
        event["isBase64Encoded"] = True
    return event
