"""The postback path and the order ledger: one state is one message whatever its bytes, and with
OrderConfirmation=on each accepted postback costs exactly one DynamoDB request (with off, none).

DynamoDB is reached through a relay in front of the moto server that counts every request the
function makes: the cost is a number to assert, not a claim.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import boto3
import pytest
import requests

from kitehooks.orders.ledger import Claim, OrderLedger
from local.provision import ResourceValues
from local.samples import http_api_event, postback_body
from tests.conftest import TEST_API_SECRET, FakeLambdaContext, load_function, reset_layer_caches
from tests.integration.test_postback_handler import queued

ORDER_ID = "251130000050001"
USER = "AB1234"
TIMESTAMP = "2026-11-30 10:15:02"


class CountingRelay:
    """An AWS endpoint that passes every request on to ``upstream`` and notes its operation."""

    def __init__(self, upstream: str) -> None:
        self.operations: list[str] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                relay.operations.append(headers.get("X-Amz-Target", "?").rpartition(".")[2])
                answer = requests.post(upstream + self.path, data=body, headers=headers, timeout=10)
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in (
                        "content-length",
                        "content-encoding",
                        "transfer-encoding",
                        "connection",
                    ):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


Invoke = Callable[[bytes], tuple[int, dict[str, Any]]]


def _postback_function(monkeypatch: pytest.MonkeyPatch, stack: ResourceValues, ledger_table: str) -> Invoke:
    monkeypatch.setenv("ORDER_UPDATES_QUEUE_URL", stack["OrderUpdatesQueue"]["Ref"])
    monkeypatch.setenv("UNDELIVERED_BUCKET", stack["UndeliveredPostbacksBucket"]["Ref"])
    monkeypatch.setenv("API_CREDENTIALS_SECRET_ID", stack["ApiCredentialsSecret"]["Ref"])
    # As the template sets it: the table with OrderConfirmation=on, empty with off.
    monkeypatch.setenv("ORDER_LEDGER_TABLE", ledger_table)
    reset_layer_caches()
    app = load_function("postback")
    calls = itertools.count(1)

    def call(body: bytes) -> tuple[int, dict[str, Any]]:
        event = http_api_event("POST", "/postback", body, request_id=f"ledger-{next(calls)}")
        response = app.handler(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    return call


@pytest.fixture
def dynamodb(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingRelay]:
    """Every DynamoDB request of the function goes through this relay."""
    with CountingRelay(aws_env) as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", relay.url)
        yield relay
    reset_layer_caches()


@pytest.fixture
def confirming(stack: ResourceValues, dynamodb: CountingRelay, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """The postback function with OrderConfirmation=on."""
    return _postback_function(monkeypatch, stack, stack["OrderLedgerTable"]["Ref"])


@pytest.fixture
def not_confirming(stack: ResourceValues, dynamodb: CountingRelay, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """The postback function with OrderConfirmation=off."""
    return _postback_function(monkeypatch, stack, "")


def ledger(stack: ResourceValues) -> OrderLedger:
    return OrderLedger(boto3.client("dynamodb"), stack["OrderLedgerTable"]["Ref"])


def body(**fields: Any) -> bytes:
    return postback_body(
        TEST_API_SECRET, **{"order_id": ORDER_ID, "user_id": USER, "order_timestamp": TIMESTAMP, **fields}
    )


def state_id(state: str) -> str:
    return hashlib.sha256(f"{ORDER_ID}|{state}".encode()).hexdigest()


# --- the cost: one write with on, none with off -------------------------------------------------


def test_one_postback_is_one_message_and_one_dynamodb_write(
    confirming: Invoke, dynamodb: CountingRelay, stack: ResourceValues
) -> None:
    assert confirming(body(status="COMPLETE", filled_quantity=10)) == (
        200,
        {"status": "queued", "order_id": ORDER_ID},
    )
    assert dynamodb.operations == ["UpdateItem"]
    [message] = queued(stack)
    assert message["Attributes"]["MessageDeduplicationId"] == state_id("COMPLETE|10")
    # The state is delivered, and its claim awaits Kite's history.
    order = ledger(stack).orders_of(USER)[ORDER_ID]
    assert order.delivered == {"COMPLETE|10"}
    assert order.claims == {Claim("COMPLETE", 10, TIMESTAMP)}


def test_with_confirmation_off_the_postback_path_makes_no_dynamodb_request(
    not_confirming: Invoke, dynamodb: CountingRelay, stack: ResourceValues
) -> None:
    assert not_confirming(body(status="COMPLETE", filled_quantity=10))[0] == 200
    assert not_confirming(body(status="CANCELLED", filled_quantity=0, order_id="251130000050002"))[0] == 200
    assert dynamodb.operations == []
    assert len(queued(stack)) == 2
    assert ledger(stack).orders_of(USER) == {}


def test_a_postback_naming_no_state_is_queued_and_not_recorded(
    confirming: Invoke, dynamodb: CountingRelay, stack: ResourceValues
) -> None:
    raw = body(status="COMPLETE", filled_quantity="junk")
    assert confirming(raw)[0] == 200
    assert dynamodb.operations == []
    [message] = queued(stack)
    assert message["Attributes"]["MessageDeduplicationId"] == hashlib.sha256(raw).hexdigest()


def test_a_rejected_postback_makes_no_dynamodb_request(
    confirming: Invoke, dynamodb: CountingRelay, stack: ResourceValues
) -> None:
    forged = postback_body("not-the-secret", order_id=ORDER_ID, user_id=USER)
    assert confirming(forged)[0] == 403
    assert dynamodb.operations == []
    assert queued(stack) == []


# --- one state, one message, whatever the bytes -------------------------------------------------


def test_two_cancellations_of_one_order_are_one_message(
    confirming: Invoke, dynamodb: CountingRelay, stack: ResourceValues
) -> None:
    first = body(status="CANCELLED", filled_quantity=0, exchange_update_timestamp="2026-11-30 10:15:02")
    second = body(status="CANCELLED", filled_quantity=0, exchange_update_timestamp="2026-11-30 10:15:03")
    assert first != second
    assert confirming(first)[0] == 200
    assert confirming(second)[0] == 200
    [message] = queued(stack)
    assert message["Body"] == first.decode()  # the first one received is the one delivered
    assert dynamodb.operations == ["UpdateItem", "UpdateItem"]  # each is recorded; sets merge them
    assert ledger(stack).delivered(USER, ORDER_ID) == {"CANCELLED|0"}


def test_an_update_and_the_books_open_of_one_fill_are_one_message(
    confirming: Invoke, stack: ResourceValues
) -> None:
    assert confirming(body(status="UPDATE", filled_quantity=4, guid="first"))[0] == 200
    assert confirming(body(status="OPEN", filled_quantity=4, guid="second"))[0] == 200
    [message] = queued(stack)
    assert json.loads(message["Body"])["status"] == "UPDATE"
    assert message["Attributes"]["MessageDeduplicationId"] == state_id("OPEN|4")
    assert ledger(stack).delivered(USER, ORDER_ID) == {"OPEN|4"}


def test_another_fill_or_status_is_another_message(confirming: Invoke, stack: ResourceValues) -> None:
    for status, filled in [("UPDATE", 4), ("UPDATE", 6), ("COMPLETE", 10)]:
        assert confirming(body(status=status, filled_quantity=filled))[0] == 200
    assert [json.loads(m["Body"])["filled_quantity"] for m in queued(stack)] == [4, 6, 10]
    assert ledger(stack).delivered(USER, ORDER_ID) == {"OPEN|4", "OPEN|6", "COMPLETE|10"}
