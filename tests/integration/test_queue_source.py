"""The `source` message attribute: `postback` when sent on receipt, `redrive` when sent by
`make redrive`, so a consumer can tell a late, parked update from a fresh one."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from kitehooks.orders import queue
from kitehooks.postbacks.postback import VerifiedPostback, parse_postback, verify_postback
from local.provision import ResourceValues
from local.samples import http_api_event, postback_body
from tests.conftest import TEST_API_SECRET, FakeLambdaContext, load_function, reset_layer_caches


def verified(**fields: Any) -> VerifiedPostback:
    return verify_postback(parse_postback(postback_body(TEST_API_SECRET, **fields), 16_384), TEST_API_SECRET)


def received(stack: ResourceValues) -> list[dict[str, Any]]:
    messages = (
        boto3.client("sqs")
        .receive_message(
            QueueUrl=stack["OrderUpdatesQueue"]["Ref"],
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["MessageGroupId"],
        )
        .get("Messages", [])
    )
    return [dict(message) for message in messages]


def attributes(message: dict[str, Any]) -> dict[str, str]:
    return {name: value["StringValue"] for name, value in message["MessageAttributes"].items()}


def test_publish_says_postback_unless_told_otherwise(stack: ResourceValues) -> None:
    postback = verified(order_id="251130000011111", status="OPEN")
    queue.publish(boto3.client("sqs"), stack["OrderUpdatesQueue"]["Ref"], postback)
    [message] = received(stack)
    assert attributes(message) == {
        "user_id": "AB1234",
        "order_id": "251130000011111",
        "status": "OPEN",
        "source": "postback",
    }
    assert message["MessageAttributes"]["source"]["DataType"] == "String"
    assert message["Attributes"]["MessageGroupId"] == "251130000011111"
    assert message["Body"] == postback.raw_body


def test_publish_by_redrive_says_redrive(stack: ResourceValues) -> None:
    postback = verified(order_id="251130000022222", status="COMPLETE")
    queue.publish(boto3.client("sqs"), stack["OrderUpdatesQueue"]["Ref"], postback, source="redrive")
    [message] = received(stack)
    assert attributes(message)["source"] == "redrive"
    assert attributes(message)["status"] == "COMPLETE"


def test_a_postback_queued_on_receipt_says_postback(
    stack: ResourceValues, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The postback function as deployed: its own call to publish keeps the default.
    monkeypatch.setenv("ORDER_UPDATES_QUEUE_URL", stack["OrderUpdatesQueue"]["Ref"])
    monkeypatch.setenv("UNDELIVERED_BUCKET", stack["UndeliveredPostbacksBucket"]["Ref"])
    monkeypatch.setenv("API_CREDENTIALS_SECRET_ID", stack["ApiCredentialsSecret"]["Ref"])
    reset_layer_caches()
    try:
        app = load_function("postback")
        event = http_api_event("POST", "/postback", postback_body(TEST_API_SECRET, status="OPEN"))
        response = app.handler(event, FakeLambdaContext())
    finally:
        reset_layer_caches()
    assert response["statusCode"] == 200, json.loads(response["body"])
    [message] = received(stack)
    assert attributes(message)["source"] == "postback"
