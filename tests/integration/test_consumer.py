"""The example consumer (functions/consumer/) on messages the real producers put on the template's
FIFO queue in a moto server: the postback function, redrive's publish, and a reconciler send per the
message contract. Each batch is taken off the queue with a real ReceiveMessage and shaped as
Lambda's SQS event source hands it to the function; what the function reports is then applied to
the queue as Lambda does (successes deleted, failures left to come back)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest

from kitehooks.config import ConfigurationError
from kitehooks.orders import queue
from kitehooks.orders.states import state_of_order
from kitehooks.postbacks.postback import parse_postback, verify_postback
from local.provision import ResourceValues
from local.samples import KITE_POSTBACK_EXAMPLE, http_api_event, postback_body
from tests.conftest import (
    REGION,
    ROOT,
    TEST_API_SECRET,
    FakeLambdaContext,
    load_function,
    reset_layer_caches,
)

USER_ID = "AB1234"


@dataclass(frozen=True)
class Handled:
    source: str
    order_id: str
    status: str
    filled_quantity: int
    signed_fields: tuple[str, ...]


class Consumer:
    """The consumer function as Lambda runs it, with ``handle_order_update`` recorded (and made to
    fail for the states in ``failing``)."""

    def __init__(self, app: ModuleType, stack: ResourceValues) -> None:
        self.app = app
        self.queue_url = stack["OrderUpdatesQueue"]["Ref"]
        self.queue_arn = stack["OrderUpdatesQueue"]["Arn"]
        self.dead_letter_url = stack["OrderUpdatesDeadLetterQueue"]["Ref"]
        self.handled: list[Handled] = []
        self.failing: set[tuple[str, str, int]] = set()
        example = app.handle_order_update

        def recorded(update: Any) -> None:
            if (update.order_id, update.status, update.filled_quantity) in self.failing:
                raise RuntimeError("the user's logic failed")
            example(update)  # the example's own log line, as deployed
            self.handled.append(
                Handled(
                    update.source,
                    update.order_id,
                    update.status,
                    update.filled_quantity,
                    update.signed_fields,
                )
            )

        app.__dict__["handle_order_update"] = recorded  # looked up by name at each update

    def receive(self) -> dict[str, Any]:
        """One batch (up to 10), as Lambda's SQS event."""
        messages = boto3.client("sqs").receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        return {
            "Records": [lambda_record(message, self.queue_arn) for message in messages.get("Messages", [])]
        }

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self.app.handler(event, FakeLambdaContext())
        return response

    def settle(self, event: dict[str, Any], response: dict[str, Any]) -> None:
        """What Lambda does with the answer: delete what succeeded; what failed becomes visible
        again (here at once, standing for the visibility timeout)."""
        sqs = boto3.client("sqs")
        failed = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
        for record in event["Records"]:
            if record["messageId"] in failed:
                sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
                )
            else:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=record["receiptHandle"])

    def run_once(self) -> tuple[dict[str, Any], dict[str, Any]]:
        event = self.receive()
        if not event["Records"]:
            return event, {"batchItemFailures": []}  # Lambda invokes no function for an empty queue
        response = self.invoke(event)
        self.settle(event, response)
        return event, response


def lambda_record(message: Any, queue_arn: str) -> dict[str, Any]:
    """An SQS message as Lambda's event source mapping delivers it."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message["Attributes"]),
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


@pytest.fixture
def consumer(stack: ResourceValues, monkeypatch: pytest.MonkeyPatch) -> Iterator[Consumer]:
    monkeypatch.setenv("IDEMPOTENCY_TABLE", stack["ConsumerIdempotencyTable"]["Ref"])
    # As in Lambda, the function's own folder is importable (order_update.py).
    monkeypatch.syspath_prepend(str(ROOT / "functions" / "consumer"))
    reset_layer_caches()
    yield Consumer(load_function("consumer"), stack)
    reset_layer_caches()


Post = Callable[..., None]


@pytest.fixture
def post(stack: ResourceValues, monkeypatch: pytest.MonkeyPatch) -> Iterator[Post]:
    """Kite posts a signed postback to the postback function, which queues it (source=postback)."""
    monkeypatch.setenv("ORDER_UPDATES_QUEUE_URL", stack["OrderUpdatesQueue"]["Ref"])
    monkeypatch.setenv("UNDELIVERED_BUCKET", stack["UndeliveredPostbacksBucket"]["Ref"])
    monkeypatch.setenv("API_CREDENTIALS_SECRET_ID", stack["ApiCredentialsSecret"]["Ref"])
    reset_layer_caches()
    postback_app = load_function("postback")

    def send(**fields: Any) -> None:
        event = http_api_event("POST", "/postback", postback_body(TEST_API_SECRET, **fields))
        response = postback_app.handler(event, FakeLambdaContext())
        assert response["statusCode"] == 200, response["body"]

    yield send
    reset_layer_caches()


def redrive(stack: ResourceValues, **fields: Any) -> None:
    """A parked postback sent by ``make redrive``'s publish (source=redrive)."""
    postback = verify_postback(
        parse_postback(postback_body(TEST_API_SECRET, **fields), 16_384), TEST_API_SECRET
    )
    queue.publish(boto3.client("sqs"), stack["OrderUpdatesQueue"]["Ref"], postback, source="redrive")


def book_order(**fields: Any) -> dict[str, Any]:
    """An order object as Kite's GET /orders returns it (no checksum: it is no postback)."""
    order = {**KITE_POSTBACK_EXAMPLE, **fields}
    del order["checksum"]
    return order


def reconcile(stack: ResourceValues, order: dict[str, Any], deduplication_id: str | None = None) -> None:
    """A state recovered by the reconciler, per the message contract: body the order object,
    group the order_id, deduplication id the state's, the same attributes with source=reconciler."""
    state = state_of_order(order)
    assert state is not None
    boto3.client("sqs").send_message(
        QueueUrl=stack["OrderUpdatesQueue"]["Ref"],
        MessageBody=json.dumps(order, separators=(",", ":")),
        MessageGroupId=state.order_id,
        MessageDeduplicationId=deduplication_id or state.deduplication_id,
        MessageAttributes={
            name: {"DataType": "String", "StringValue": value}
            for name, value in {
                "user_id": USER_ID,
                "order_id": state.order_id,
                "status": order["status"],
                "source": "reconciler",
            }.items()
        },
    )


def failed_ids(response: dict[str, Any]) -> list[str]:
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def ids_of(event: dict[str, Any], *groups: str) -> list[str]:
    """The message ids of the event's records of these orders (message groups), in this order."""
    by_group = {record["attributes"]["MessageGroupId"]: record["messageId"] for record in event["Records"]}
    return [by_group[group] for group in groups]


def test_updates_from_every_source_are_handled_and_none_is_returned(
    consumer: Consumer, post: Post, stack: ResourceValues, service_logs: Any
) -> None:
    post(order_id="251130000000001", status="UPDATE", filled_quantity=5, quantity=10)
    redrive(stack, order_id="251130000000002", status="COMPLETE", filled_quantity=1)
    reconcile(stack, book_order(order_id="251130000000003", status="CANCELLED", filled_quantity=0))

    event, response = consumer.run_once()

    assert len(event["Records"]) == 3
    assert response == {"batchItemFailures": []}
    signed = ("order_id", "order_timestamp")
    assert sorted(consumer.handled, key=lambda h: h.order_id) == [
        # Kite's UPDATE is the book's OPEN with the new filled_quantity.
        Handled("postback", "251130000000001", "OPEN", 5, signed),
        Handled("redrive", "251130000000002", "COMPLETE", 1, signed),
        Handled("reconciler", "251130000000003", "CANCELLED", 0, ()),
    ]
    assert consumer.receive() == {"Records": []}  # all deleted
    logged = service_logs.getvalue()
    assert logged.count('"message":"order update"') == 3
    # The postbacks' checksums were verified on receipt; they never reach the consumer's logs.
    for record in event["Records"]:
        checksum = json.loads(record["body"]).get("checksum")
        assert checksum is None or checksum not in logged
    assert TEST_API_SECRET not in logged


def test_a_failed_update_holds_back_only_the_later_updates_of_its_own_order(
    consumer: Consumer, post: Post
) -> None:
    # Order A: open, partly filled, filled. Order B: open, filled. Interleaved as Kite sends them.
    a, b = "251130000000010", "251130000000020"
    post(order_id=a, status="OPEN", filled_quantity=0, order_timestamp="2026-11-30 09:20:00")
    post(order_id=b, status="OPEN", filled_quantity=0, order_timestamp="2026-11-30 09:20:01")
    post(order_id=a, status="UPDATE", filled_quantity=5, order_timestamp="2026-11-30 09:20:02")
    post(order_id=b, status="COMPLETE", filled_quantity=10, order_timestamp="2026-11-30 09:20:03")
    post(order_id=a, status="COMPLETE", filled_quantity=10, order_timestamp="2026-11-30 09:20:04")
    consumer.failing.add((a, "OPEN", 5))

    event, response = consumer.run_once()

    order_of = {r["messageId"]: (r["attributes"]["MessageGroupId"], r["body"]) for r in event["Records"]}
    assert len(order_of) == 5
    failed = failed_ids(response)
    # A's partial fill failed; A's fill after it was not tried; B went on.
    assert [json.loads(order_of[m][1])["status"] for m in failed] == ["UPDATE", "COMPLETE"]
    assert {order_of[m][0] for m in failed} == {a}
    assert [(h.order_id, h.status, h.filled_quantity) for h in consumer.handled] == [
        (a, "OPEN", 0),
        (b, "OPEN", 0),
        (b, "COMPLETE", 10),
    ]

    # After the visibility timeout the two come back, in order, and this time succeed.
    consumer.failing.clear()
    event, response = consumer.run_once()
    assert [r["messageId"] for r in event["Records"]] == failed
    assert response == {"batchItemFailures": []}
    assert [(h.order_id, h.status, h.filled_quantity) for h in consumer.handled[3:]] == [
        (a, "OPEN", 5),
        (a, "COMPLETE", 10),
    ]


def test_one_order_state_from_two_sources_is_handled_once(
    consumer: Consumer, post: Post, stack: ResourceValues
) -> None:
    order_id = "251130000000030"
    post(order_id=order_id, status="UPDATE", filled_quantity=5, quantity=10)
    event, response = consumer.run_once()
    assert (len(event["Records"]), response) == (1, {"batchItemFailures": []})

    # The reconciler recovers the same state (OPEN, 5) from Kite's book after SQS's five-minute
    # window, so SQS no longer deduplicates it: a deduplication id it has not seen stands for that.
    same_state = book_order(order_id=order_id, status="OPEN", filled_quantity=5, quantity=10)
    reconcile(stack, same_state, deduplication_id="after-the-five-minute-window")
    # A later state of the same order is a new update.
    reconcile(stack, book_order(order_id=order_id, status="OPEN", filled_quantity=6, quantity=10))
    event, response = consumer.run_once()
    assert (len(event["Records"]), response) == (2, {"batchItemFailures": []})

    assert [(h.source, h.status, h.filled_quantity) for h in consumer.handled] == [
        ("postback", "OPEN", 5),
        ("reconciler", "OPEN", 6),
    ]
    assert consumer.receive() == {"Records": []}  # the duplicate was consumed, not left behind


def test_a_state_whose_handling_failed_is_handled_when_it_comes_again(
    consumer: Consumer, post: Post, stack: ResourceValues
) -> None:
    # A failure must not be remembered as handled: the same state from another source still runs.
    order_id = "251130000000040"
    consumer.failing.add((order_id, "COMPLETE", 1))
    post(order_id=order_id, status="COMPLETE", filled_quantity=1)
    event = consumer.receive()
    assert failed_ids(consumer.invoke(event)) == ids_of(event, order_id)
    boto3.client("sqs").delete_message(
        QueueUrl=consumer.queue_url, ReceiptHandle=event["Records"][0]["receiptHandle"]
    )

    consumer.failing.clear()
    reconcile(stack, book_order(order_id=order_id, status="COMPLETE", filled_quantity=1), "later")
    consumer.run_once()
    assert [(h.source, h.status) for h in consumer.handled] == [("reconciler", "COMPLETE")]


def send_raw(stack: ResourceValues, body: str, group: str, attributes: dict[str, str]) -> None:
    boto3.client("sqs").send_message(
        QueueUrl=stack["OrderUpdatesQueue"]["Ref"],
        MessageBody=body,
        MessageGroupId=group,
        MessageDeduplicationId=f"{group}-{len(body)}",
        MessageAttributes={name: {"DataType": "String", "StringValue": v} for name, v in attributes.items()},
    )


def test_a_malformed_message_is_reported_with_a_clear_line_and_others_go_on(
    consumer: Consumer, post: Post, stack: ResourceValues, service_logs: Any
) -> None:
    checksum = "ab" * 32
    send_raw(stack, "not json at all", "E1", {"source": "postback"})
    # Signed-looking, but names no state (no filled_quantity): its checksum must not be logged.
    send_raw(
        stack,
        json.dumps({"order_id": "E2", "status": "OPEN", "checksum": checksum}),
        "E2",
        {"source": "postback"},
    )
    send_raw(stack, json.dumps(book_order(order_id="E3")), "E3", {})  # no source attribute
    post(order_id="251130000000050", status="COMPLETE", filled_quantity=1)

    event, response = consumer.run_once()

    assert failed_ids(response) == ids_of(event, "E1", "E2", "E3")
    assert [h.order_id for h in consumer.handled] == ["251130000000050"]
    lines = [json.loads(line) for line in service_logs.getvalue().splitlines()]
    unreadable = [line for line in lines if line["message"] == "order update unreadable"]
    assert [(line["message_id"], line["reason"], line["level"]) for line in unreadable] == [
        (ids_of(event, "E1")[0], "body is not JSON", "ERROR"),
        (ids_of(event, "E2")[0], "body names no order state (order_id, status and filled_quantity)", "ERROR"),
        (ids_of(event, "E3")[0], "no source attribute of postback, redrive or reconciler", "ERROR"),
    ]
    assert checksum not in service_logs.getvalue()


def test_a_batch_of_only_malformed_messages_is_reported_not_raised(
    consumer: Consumer, stack: ResourceValues
) -> None:
    send_raw(stack, "[]", "E4", {"source": "redrive"})
    event = consumer.receive()
    response = consumer.invoke(event)  # Powertools would raise here by default
    assert failed_ids(response) == ids_of(event, "E4")


def test_an_update_that_keeps_failing_reaches_the_dead_letter_queue_and_holds_its_order_meanwhile(
    consumer: Consumer, post: Post
) -> None:
    stuck, other = "251130000000060", "251130000000070"
    post(order_id=stuck, status="OPEN", filled_quantity=0, order_timestamp="2026-11-30 10:00:00")
    post(order_id=stuck, status="COMPLETE", filled_quantity=1, order_timestamp="2026-11-30 10:00:01")
    post(order_id=other, status="COMPLETE", filled_quantity=1)
    consumer.failing.add((stuck, "OPEN", 0))

    received = []
    for _ in range(7):
        event, _response = consumer.run_once()
        received.append(sorted(r["attributes"]["MessageGroupId"] for r in event["Records"]))

    # The template's maxReceiveCount is 5: five tries, then SQS moves the message to the dead-letter
    # queue. Its order's later update was returned with it each time, so it goes there too.
    assert received == [[stuck, stuck, other], *[[stuck, stuck]] * 4, [], []]
    assert [h.order_id for h in consumer.handled] == [other]
    dead = boto3.client("sqs").receive_message(
        QueueUrl=consumer.dead_letter_url,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )["Messages"]
    assert [(json.loads(m["Body"])["status"], m["Attributes"]["MessageGroupId"]) for m in dead] == [
        ("OPEN", stuck),
        ("COMPLETE", stuck),
    ]
    # Still tells where it came from, for whoever looks at it.
    assert {m["MessageAttributes"]["source"]["StringValue"] for m in dead} == {"postback"}


def test_without_its_table_the_function_fails_as_a_whole(
    stack: ResourceValues, post: Post, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deployment fault, not a bad message: the invocation fails, its errors alarm fires, and
    # the batch goes back to the queue whole.
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "")
    monkeypatch.syspath_prepend(str(ROOT / "functions" / "consumer"))
    unconfigured = Consumer(load_function("consumer"), stack)
    post(order_id="251130000000080", status="COMPLETE", filled_quantity=1)
    event = unconfigured.receive()
    with pytest.raises(ConfigurationError, match="IDEMPOTENCY_TABLE is not set"):
        unconfigured.invoke(event)
    assert unconfigured.handled == []
