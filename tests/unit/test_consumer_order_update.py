"""The example consumer's reading of one SQS record (functions/consumer/order_update.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kitehooks.orders.states import OrderState
from local.samples import KITE_POSTBACK_EXAMPLE, postback_order

ROOT = Path(__file__).resolve().parents[2]
SECRET = "unit-test-secret"


def _load() -> ModuleType:
    path = ROOT / "functions" / "consumer" / "order_update.py"
    spec = importlib.util.spec_from_file_location("consumer_order_update", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


order_update = _load()


def record(body: Any, group: str | None = None, **attributes: Any) -> dict[str, Any]:
    """One record of Lambda's SQS event; ``attributes`` are String message attributes (a dict
    value is taken as the attribute itself)."""
    text = body if isinstance(body, str) else json.dumps(body)
    system = {"ApproximateReceiveCount": "1", "SentTimestamp": "1764480000000"}
    if group is not None:
        system["MessageGroupId"] = group
    return {
        "messageId": "0b4c7c57-0d0e-4e9c-9d42-3f0e5d6a7b81",
        "receiptHandle": "handle",
        "body": text,
        "attributes": system,
        "messageAttributes": {
            name: value if isinstance(value, dict) else {"stringValue": value, "dataType": "String"}
            for name, value in attributes.items()
        },
        "eventSource": "aws:sqs",
    }


def test_a_postback_reads_as_the_books_state_with_what_its_checksum_signs() -> None:
    body = postback_order(SECRET, order_id="251130000000001", status="UPDATE", filled_quantity=5, quantity=10)
    update = order_update.parse_order_update(
        record(body, "251130000000001", source="postback", user_id="AB1234", status="UPDATE")
    )
    assert update.source == "postback"
    assert (update.order_id, update.status, update.filled_quantity) == ("251130000000001", "OPEN", 5)
    assert update.state == OrderState("251130000000001", "OPEN", 5)
    assert update.user_id == "AB1234"
    assert update.signed_fields == ("order_id", "order_timestamp")
    assert update.order_timestamp == body["order_timestamp"]
    assert update.message_id == "0b4c7c57-0d0e-4e9c-9d42-3f0e5d6a7b81"
    # The order as Kite wrote it, less the checksum (verified before queueing; never to be logged).
    assert "checksum" not in update.order
    assert update.order["status"] == "UPDATE"
    assert update.order["quantity"] == 10


def test_a_redriven_postback_is_signed_the_same_way() -> None:
    body = postback_order(SECRET, status="COMPLETE")
    update = order_update.parse_order_update(record(body, body["order_id"], source="redrive"))
    assert (update.source, update.status, update.signed_fields) == (
        "redrive",
        "COMPLETE",
        ("order_id", "order_timestamp"),
    )


def test_a_reconciler_message_is_kites_order_object_with_nothing_signed() -> None:
    book = {key: value for key, value in KITE_POSTBACK_EXAMPLE.items() if key not in ("checksum", "user_id")}
    book.update(order_id="251130000000003", status="OPEN", filled_quantity=0, placed_by="CD5678")
    update = order_update.parse_order_update(record(book, "251130000000003", source="reconciler"))
    assert (update.source, update.status, update.filled_quantity) == ("reconciler", "OPEN", 0)
    assert update.signed_fields == ()
    assert update.user_id == "CD5678"  # the order book says placed_by where a postback says user_id


def test_the_user_id_attribute_comes_first() -> None:
    body = postback_order(SECRET, user_id="AB1234")
    update = order_update.parse_order_update(
        record(body, body["order_id"], source="postback", user_id="ZZ9999")
    )
    assert update.user_id == "ZZ9999"


def test_a_quantity_kite_sent_as_text_is_read() -> None:
    body = postback_order(SECRET, status="UPDATE", filled_quantity="7")
    update = order_update.parse_order_update(record(body, body["order_id"], source="postback"))
    assert (update.status, update.filled_quantity) == ("OPEN", 7)


def test_without_a_group_the_body_alone_decides() -> None:
    body = postback_order(SECRET)
    assert order_update.parse_order_update(record(body, None, source="postback")).order_id == body["order_id"]


GOOD = postback_order(SECRET)
GOOD_ID = GOOD["order_id"]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (record("not json", GOOD_ID, source="postback"), "body is not JSON"),
        (record("[1, 2]", GOOD_ID, source="postback"), "body is not a JSON object"),
        (record("[" * 100_000, GOOD_ID, source="postback"), "body is not JSON"),
        (
            record({**GOOD, "filled_quantity": None}, GOOD_ID, source="postback"),
            "body names no order state (order_id, status and filled_quantity)",
        ),
        (
            record({**GOOD, "status": None}, GOOD_ID, source="postback"),
            "body names no order state (order_id, status and filled_quantity)",
        ),
        (
            record({**GOOD, "filled_quantity": -1}, GOOD_ID, source="postback"),
            "body names no order state (order_id, status and filled_quantity)",
        ),
        (
            record(GOOD, "220303000308999", source="postback"),
            "order_id of the body is not the message's MessageGroupId",
        ),
        (record(GOOD, GOOD_ID), "no source attribute of postback, redrive or reconciler"),
        (record(GOOD, GOOD_ID, source="webhook"), "no source attribute of postback, redrive or reconciler"),
        (
            record(GOOD, GOOD_ID, source={"binaryValue": "cG9zdGJhY2s=", "dataType": "Binary"}),
            "no source attribute of postback, redrive or reconciler",
        ),
    ],
)
def test_what_is_not_an_order_update_is_refused_with_a_reason(message: dict[str, Any], reason: str) -> None:
    with pytest.raises(order_update.MalformedOrderUpdate) as refused:
        order_update.parse_order_update(message)
    assert str(refused.value) == reason
    assert GOOD["checksum"] not in str(refused.value)


def test_a_good_record_is_not_refused() -> None:
    # The good case of the table above: the same message with its source and matching group.
    update = order_update.parse_order_update(record(GOOD, GOOD_ID, source="postback"))
    assert update.state == OrderState(GOOD_ID, "COMPLETE", 1)


def test_the_parsed_view_is_frozen() -> None:
    update = order_update.parse_order_update(record(GOOD, GOOD_ID, source="postback"))
    with pytest.raises(AttributeError):
        update.status = "CANCELLED"
