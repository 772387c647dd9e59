"""`make redrive`: parked postbacks go back to the queue, checked again on the way, in the order
they were received."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config

from kitehooks.orders import queue
from kitehooks.orders.ledger import Claim, OrderLedger
from kitehooks.orders.states import OrderState
from kitehooks.postbacks import redrive as redrive_module
from kitehooks.postbacks import undelivered
from kitehooks.postbacks.redrive import main, redrive
from local.provision import ResourceValues
from local.samples import postback_body
from tests.conftest import TEST_API_SECRET, closed_port
from tests.faults import FailingEndpoint, HangingEndpoint, TricklingEndpoint

# Six orders: enough that hash order puts some COMPLETEs first (4 of 6 did on the old keys).
ORDER_IDS = [f"2511300000{n:05d}" for n in range(6)]


def bucket_of(stack: ResourceValues) -> str:
    return stack["UndeliveredPostbacksBucket"]["Ref"]


def queue_of(stack: ResourceValues) -> str:
    return stack["OrderUpdatesQueue"]["Ref"]


def park(stack: ResourceValues, body: bytes, verification: undelivered.Verification) -> str:
    """Park ``body`` now, as the postback function does."""
    return undelivered.park(
        boto3.client("s3"), bucket_of(stack), body, verification, "queue-unavailable", "unknown", "req"
    )


def park_at(stack: ResourceValues, body: bytes, verification: undelivered.Verification, at: datetime) -> str:
    key = undelivered.object_key(body, verification, at)
    boto3.client("s3").put_object(Bucket=bucket_of(stack), Key=key, Body=body)
    return key


def remaining(stack: ResourceValues) -> set[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket_of(stack))
    return {item["Key"] for item in listing.get("Contents", [])}


def drain(stack: ResourceValues) -> list[dict[str, Any]]:
    """Every message in the FIFO queue, in the order a consumer receives them (deleted as read)."""
    sqs = boto3.client("sqs")
    received: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_of(stack),
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["MessageGroupId"],
        ).get("Messages", [])
        if not batch:
            return received
        for message in batch:
            received.append(dict(message))
            sqs.delete_message(QueueUrl=queue_of(stack), ReceiptHandle=message["ReceiptHandle"])


def statuses_by_order(messages: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Per MessageGroupId (order_id), the statuses in the order the queue delivered them."""
    by_order: dict[str, list[str]] = {}
    for message in messages:
        group = message["Attributes"]["MessageGroupId"]
        by_order.setdefault(group, []).append(json.loads(message["Body"])["status"])
    return by_order


def queued_bodies(stack: ResourceValues) -> list[str]:
    return [message["Body"] for message in drain(stack)]


def args(stack: ResourceValues, *extra: str) -> list[str]:
    return [
        "--bucket",
        bucket_of(stack),
        "--queue-url",
        queue_of(stack),
        "--secret-id",
        stack["ApiCredentialsSecret"]["Ref"],
        *extra,
    ]


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def in_wrong_hash_order(order_id: str, first: str, then: str) -> tuple[bytes, bytes]:
    """Two updates of one order whose digests sort the later one first, as they did on old keys."""
    for attempt in range(100):
        earlier = postback_body(TEST_API_SECRET, order_id=order_id, status=first, guid=f"g{attempt}")
        later = postback_body(TEST_API_SECRET, order_id=order_id, status=then, guid=f"g{attempt}")
        if digest(later) < digest(earlier):
            return earlier, later
    raise AssertionError("no pair in the wrong hash order")


def test_redrive_sends_genuine_postbacks_and_leaves_forged_ones(
    stack: ResourceValues, capsys: pytest.CaptureFixture[str]
) -> None:
    verified = postback_body(TEST_API_SECRET, status="OPEN")
    unverified = postback_body(TEST_API_SECRET, status="COMPLETE")
    forged = postback_body("not-the-secret", status="CANCELLED")
    park(stack, verified, "verified")
    park(stack, unverified, "unverified")
    forged_key = park(stack, forged, "unverified")

    assert main(args(stack)) == 1  # something was left for a person to look at
    messages = drain(stack)
    assert [m["Body"] for m in messages] == [verified.decode(), unverified.decode()]
    # Consumers can tell a late, parked update from one sent on receipt.
    assert [m["MessageAttributes"]["source"] for m in messages] == [
        {"DataType": "String", "StringValue": "redrive"}
    ] * 2
    assert remaining(stack) == {forged_key}
    output = capsys.readouterr().out
    assert "sent 2 parked postback(s)" in output
    assert forged_key in output
    assert TEST_API_SECRET not in output


def test_rejected_postbacks_are_sent_once_the_new_secret_verifies_them(
    stack: ResourceValues, capsys: pytest.CaptureFixture[str]
) -> None:
    # Kite's api_secret was regenerated before Secrets Manager had it: postbacks were refused.
    genuine = postback_body(TEST_API_SECRET, status="OPEN")
    junk = postback_body("attacker-guess", status="COMPLETE")
    park(stack, genuine, "rejected")
    junk_key = park(stack, junk, "rejected")
    assert main(args(stack)) == 0  # junk that still fails is expected, not an error
    assert queued_bodies(stack) == [genuine.decode()]
    assert remaining(stack) == {junk_key}
    assert "1 postback(s) whose checksum still fails were left to expire" in capsys.readouterr().out


def test_each_orders_updates_parked_within_one_second_arrive_in_receive_order(stack: ResourceValues) -> None:
    # An SQS outage: every order goes OPEN then COMPLETE within the same second, and is parked.
    for status in ("OPEN", "COMPLETE"):
        for order_id in ORDER_IDS:
            park(stack, postback_body(TEST_API_SECRET, order_id=order_id, status=status), "verified")
    assert main(args(stack)) == 0
    assert statuses_by_order(drain(stack)) == {order_id: ["OPEN", "COMPLETE"] for order_id in ORDER_IDS}
    assert remaining(stack) == set()


def test_two_updates_of_an_order_in_one_second_in_the_wrong_hash_order(stack: ResourceValues) -> None:
    order_id = "251130000099999"
    opened, completed = in_wrong_hash_order(order_id, "OPEN", "COMPLETE")
    # Received 0.2 s apart within 09:15:00 UTC, the later one in another verification folder.
    park_at(stack, opened, "unverified", datetime(2026, 11, 30, 9, 15, 0, 300_000, tzinfo=UTC))
    park_at(stack, completed, "verified", datetime(2026, 11, 30, 9, 15, 0, 500_000, tzinfo=UTC))
    assert main(args(stack)) == 0
    assert statuses_by_order(drain(stack)) == {order_id: ["OPEN", "COMPLETE"]}


def test_old_keys_without_microseconds_are_redriven_among_new_ones(stack: ResourceValues) -> None:
    order_id = "251130000088888"
    opened, completed = in_wrong_hash_order(order_id, "OPEN", "COMPLETE")
    triggered = postback_body(TEST_API_SECRET, order_id=order_id, status="TRIGGER PENDING")
    # Parked before the upgrade, in the key format of the time; the rest after it, same second.
    old_key = f"undelivered/verified/2026/11/30/091500-{digest(opened)}.json"
    boto3.client("s3").put_object(Bucket=bucket_of(stack), Key=old_key, Body=opened)
    park_at(stack, triggered, "verified", datetime(2026, 11, 30, 9, 14, 59, 999_999, tzinfo=UTC))
    park_at(stack, completed, "verified", datetime(2026, 11, 30, 9, 15, 0, 1, tzinfo=UTC))
    assert main(args(stack)) == 0
    assert statuses_by_order(drain(stack)) == {order_id: ["TRIGGER PENDING", "OPEN", "COMPLETE"]}
    assert remaining(stack) == set()


def test_parked_postbacks_are_sent_oldest_first_across_folders(stack: ResourceValues) -> None:
    updates = ["OPEN", "TRIGGER PENDING", "COMPLETE"]
    folders: list[undelivered.Verification] = ["unverified", "verified", "rejected"]
    for minute, (status, folder) in enumerate(zip(updates, folders, strict=True)):
        park_at(
            stack,
            postback_body(TEST_API_SECRET, status=status),
            folder,
            datetime(2026, 11, 30, 9, minute, tzinfo=UTC),
        )
    assert main(args(stack)) == 0
    assert [json.loads(body)["status"] for body in queued_bodies(stack)] == updates


# (status, body, content type) to answer instead of the emulator.
Refusal = tuple[int, bytes, str]
SQS_REFUSAL: Refusal = (
    400,
    b'{"__type":"com.amazonaws.sqs#InvalidParameterValue","message":"refused"}',
    "application/x-amz-json-1.0",
)
S3_REFUSAL: Refusal = (
    403,
    b"<Error><Code>AccessDenied</Code><Message>refused</Message></Error>",
    "application/xml",
)
Refuse = Callable[[str, str, Mapping[str, str], bytes], Refusal | None]


class FaultyEndpoint:
    """An AWS endpoint in front of the moto server that refuses the requests ``refuse`` picks (by
    method, path, headers and body), as the real service can, and passes everything else on."""

    def __init__(self, upstream: str, refuse: Refuse) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _relay_handler(upstream, refuse))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _relay_handler(upstream: str, refuse: Refuse) -> type[BaseHTTPRequestHandler]:
    class Relay(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            refusal = refuse(self.command, self.path, headers, body)
            if refusal is not None:
                status, content, content_type = refusal
                reply_headers = {"Content-Type": content_type}
            else:
                answer = requests.request(
                    self.command, upstream + self.path, data=body, headers=headers, timeout=10
                )
                status, content = answer.status_code, answer.content
                hop_by_hop = ("content-length", "content-encoding", "transfer-encoding", "connection")
                reply_headers = {k: v for k, v in answer.headers.items() if k.lower() not in hop_by_hop}
            self.send_response(status)
            for name, value in reply_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay  # noqa: N815 - http.server names

    return Relay


def test_an_update_sqs_refuses_holds_back_its_orders_later_updates_only(
    stack: ResourceValues, aws_env: str
) -> None:
    refused_order, other_order = "251130000077777", "251130000066666"
    keys = {
        (order_id, status): park_at(
            stack,
            postback_body(TEST_API_SECRET, order_id=order_id, status=status),
            "verified",
            datetime(2026, 11, 30, 9, 15, 0, step * 1000 + offset, tzinfo=UTC),
        )
        for step, status in enumerate(["OPEN", "COMPLETE"])
        for offset, order_id in enumerate([refused_order, other_order])
    }

    def refuse_one_order(method: str, path: str, headers: Mapping[str, str], body: bytes) -> Refusal | None:
        sending = headers.get("X-Amz-Target", "").endswith(".SendMessage")
        return SQS_REFUSAL if sending and json.loads(body)["MessageGroupId"] == refused_order else None

    with FaultyEndpoint(aws_env, refuse_one_order) as sqs_endpoint:
        sqs = boto3.client("sqs", endpoint_url=sqs_endpoint.url)
        report = redrive(boto3.client("s3"), sqs, bucket_of(stack), queue_of(stack), TEST_API_SECRET)

    assert statuses_by_order(drain(stack)) == {other_order: ["OPEN", "COMPLETE"]}
    # The refused OPEN stays, and so does the COMPLETE behind it: sending it would put it first.
    assert set(report.failed) == {keys[refused_order, "OPEN"]}
    assert set(report.held) == {keys[refused_order, "COMPLETE"]}
    assert remaining(stack) == {keys[refused_order, "OPEN"], keys[refused_order, "COMPLETE"]}
    assert not report.ok

    # Once SQS takes it, the next run sends both, in order.
    assert main(args(stack)) == 0
    assert statuses_by_order(drain(stack)) == {refused_order: ["OPEN", "COMPLETE"]}


@pytest.mark.parametrize("failing", ["GET", "DELETE"])
def test_an_s3_failure_stops_the_run_where_it_is(stack: ResourceValues, aws_env: str, failing: str) -> None:
    # Order A: OPEN, then COMPLETE after order B's OPEN, whose object S3 will not read or delete.
    order_a, order_b = "251130000055555", "251130000044444"
    parked = [
        park_at(
            stack,
            postback_body(TEST_API_SECRET, order_id=order_id, status=status),
            "verified",
            datetime(2026, 11, 30, 9, 15, 0, step, tzinfo=UTC),
        )
        for step, (order_id, status) in enumerate(
            [(order_a, "OPEN"), (order_b, "OPEN"), (order_a, "COMPLETE")]
        )
    ]

    def refuse_order_b(method: str, path: str, headers: Mapping[str, str], body: bytes) -> Refusal | None:
        return S3_REFUSAL if method == failing and path.endswith(parked[1].rsplit("/", 1)[1]) else None

    with FaultyEndpoint(aws_env, refuse_order_b) as s3_endpoint:
        s3 = boto3.client("s3", endpoint_url=s3_endpoint.url)
        report = redrive(s3, boto3.client("sqs"), bucket_of(stack), queue_of(stack), TEST_API_SECRET)

    assert report.stopped is not None
    assert parked[1] in report.stopped
    sent_before_stop = [order_a] if failing == "GET" else [order_a, order_b]
    assert [m["Attributes"]["MessageGroupId"] for m in drain(stack)] == sent_before_stop
    assert parked[2] in remaining(stack)  # A's COMPLETE was not tried: B's OPEN might be newer
    assert not report.ok

    assert main(args(stack)) == 0  # the next run sends the rest, in order
    assert remaining(stack) == set()


def test_dry_run_sends_and_deletes_nothing(stack: ResourceValues) -> None:
    key = park(stack, postback_body(TEST_API_SECRET), "verified")
    assert main(args(stack, "--dry-run")) == 0
    assert queued_bodies(stack) == []
    assert remaining(stack) == {key}


def test_placeholder_credentials_stop_the_redrive_clearly(
    stack: ResourceValues, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack["ApiCredentialsSecret"]["Ref"],
        SecretString='{"api_key": "REPLACE_ME", "api_secret": "REPLACE_ME"}',
    )
    key = park(stack, postback_body(TEST_API_SECRET), "verified")
    assert main(args(stack)) == 2
    assert "placeholder" in capsys.readouterr().err
    assert remaining(stack) == {key}


# --- the order ledger: a state the queue has had is not sent again ------------------------------

LEDGER_USER = "AB1234"  # the user of Kite's example postback


def ledger_of(stack: ResourceValues, dynamodb: Any = None) -> OrderLedger:
    return OrderLedger(dynamodb or boto3.client("dynamodb"), stack["OrderLedgerTable"]["Ref"])


def test_a_state_the_reconciler_recovered_meanwhile_is_not_sent_again(stack: ResourceValues) -> None:
    recovered, waiting = "251130000033333", "251130000033334"
    ledger = ledger_of(stack)
    # The reconciler sent COMPLETE|1 from Kite's order book while the postback sat parked (long
    # enough ago that SQS's deduplication window is over: here, nothing of it is on the queue).
    ledger.record_delivered(LEDGER_USER, recovered, [OrderState(recovered, "COMPLETE", 1)])
    skipped = park(stack, postback_body(TEST_API_SECRET, order_id=recovered, status="COMPLETE"), "verified")
    sent = park(stack, postback_body(TEST_API_SECRET, order_id=waiting, status="COMPLETE"), "verified")

    report = redrive(
        boto3.client("s3"), boto3.client("sqs"), bucket_of(stack), queue_of(stack), TEST_API_SECRET,
        ledger=ledger,
    )  # fmt: skip

    assert report.already_delivered == [skipped]
    assert report.sent == [sent]
    assert report.ok
    assert statuses_by_order(drain(stack)) == {waiting: ["COMPLETE"]}
    assert remaining(stack) == set()  # the skipped copy is removed too: the queue has its state
    # The sent one is recorded as the postback path would have: delivered, and its claim to judge.
    order = ledger.orders_of(LEDGER_USER)[waiting]
    assert order.delivered == {"COMPLETE|1"}
    assert order.claims == {Claim("COMPLETE", 1, "2022-03-03 09:24:25")}


def test_redrive_and_the_reconciler_sending_one_state_at_once_make_one_message(stack: ResourceValues) -> None:
    # Both read the ledger before either records: they meet. The state's deduplication id, the same
    # for both, leaves one message on the queue, and the ledger ends with the state delivered once.
    order_id = "251130000033399"
    ledger = ledger_of(stack)
    body = postback_body(TEST_API_SECRET, order_id=order_id, status="COMPLETE")
    park(stack, body, "verified")
    state = OrderState(order_id, "COMPLETE", 1)
    order = {**json.loads(body), "placed_by": LEDGER_USER}
    both_read = threading.Barrier(2, timeout=30)

    class MeetingLedger(OrderLedger):
        def delivered(self, user_id: str | None, order_id: str) -> frozenset[str]:
            found = super().delivered(user_id, order_id)
            both_read.wait()  # the other writer has read too, and neither has sent
            return found

    def reconciler_sends() -> None:
        assert ledger.delivered(LEDGER_USER, order_id) == frozenset()
        both_read.wait()
        queue.publish_recovered(boto3.client("sqs"), queue_of(stack), state, order, LEDGER_USER)
        ledger.record_delivered(LEDGER_USER, order_id, [state])

    reconciler = threading.Thread(target=reconciler_sends)
    reconciler.start()
    report = redrive(
        boto3.client("s3"), boto3.client("sqs"), bucket_of(stack), queue_of(stack), TEST_API_SECRET,
        ledger=MeetingLedger(boto3.client("dynamodb"), stack["OrderLedgerTable"]["Ref"]),
    )  # fmt: skip
    reconciler.join(timeout=30)
    assert not reconciler.is_alive()
    assert len(report.sent) == 1
    assert statuses_by_order(drain(stack)) == {order_id: ["COMPLETE"]}
    assert ledger.delivered(LEDGER_USER, order_id) == {"COMPLETE|1"}


def test_without_the_ledger_the_same_state_is_sent_again(stack: ResourceValues) -> None:
    order_id = "251130000033335"
    ledger_of(stack).record_delivered(LEDGER_USER, order_id, [OrderState(order_id, "COMPLETE", 1)])
    key = park(stack, postback_body(TEST_API_SECRET, order_id=order_id, status="COMPLETE"), "verified")
    report = redrive(
        boto3.client("s3"), boto3.client("sqs"), bucket_of(stack), queue_of(stack), TEST_API_SECRET
    )
    assert report.sent == [key]
    assert report.already_delivered == []
    assert statuses_by_order(drain(stack)) == {order_id: ["COMPLETE"]}


def test_a_parked_update_is_the_books_open_state(stack: ResourceValues) -> None:
    order_id = "251130000033336"
    ledger = ledger_of(stack)
    ledger.record_delivered(LEDGER_USER, order_id, [OrderState(order_id, "OPEN", 3)])
    same = park_at(
        stack,
        postback_body(TEST_API_SECRET, order_id=order_id, status="UPDATE", filled_quantity=3),
        "verified",
        datetime(2026, 11, 30, 9, 15, 0, 1, tzinfo=UTC),
    )
    further = park_at(
        stack,
        postback_body(TEST_API_SECRET, order_id=order_id, status="UPDATE", filled_quantity=4),
        "verified",
        datetime(2026, 11, 30, 9, 15, 0, 2, tzinfo=UTC),
    )
    report = redrive(
        boto3.client("s3"), boto3.client("sqs"), bucket_of(stack), queue_of(stack), TEST_API_SECRET,
        ledger=ledger,
    )  # fmt: skip
    assert report.already_delivered == [same]
    assert report.sent == [further]
    assert [json.loads(m["Body"])["filled_quantity"] for m in drain(stack)] == [4]
    assert ledger.delivered(LEDGER_USER, order_id) == {"OPEN|3", "OPEN|4"}


def test_a_dry_run_reports_what_the_ledger_has_and_removes_nothing(
    stack: ResourceValues, capsys: pytest.CaptureFixture[str]
) -> None:
    order_id = "251130000033337"
    ledger_of(stack).record_delivered(LEDGER_USER, order_id, [OrderState(order_id, "COMPLETE", 1)])
    key = park(stack, postback_body(TEST_API_SECRET, order_id=order_id, status="COMPLETE"), "verified")
    ledger_table = stack["OrderLedgerTable"]["Ref"]
    assert main(args(stack, "--ledger-table", ledger_table, "--dry-run")) == 0
    output = capsys.readouterr().out
    assert "would send 0 parked postback(s)" in output
    assert "1 parked postback(s) already delivered" in output
    assert "would remove" in output
    assert key in output
    assert remaining(stack) == {key}
    assert queued_bodies(stack) == []


def test_the_cli_skips_and_reports_what_the_ledger_has(
    stack: ResourceValues, capsys: pytest.CaptureFixture[str]
) -> None:
    order_id = "251130000033338"
    ledger_of(stack).record_delivered(LEDGER_USER, order_id, [OrderState(order_id, "CANCELLED", 0)])
    key = park(
        stack,
        postback_body(TEST_API_SECRET, order_id=order_id, status="CANCELLED", filled_quantity=0),
        "verified",
    )
    assert main(args(stack, "--ledger-table", stack["OrderLedgerTable"]["Ref"])) == 0
    output = capsys.readouterr().out
    assert "sent 0 parked postback(s)" in output
    assert (
        "1 parked postback(s) already delivered (the order ledger has their order state): not sent, removed"
        in output
    )
    assert f"already delivered: s3://{bucket_of(stack)}/{key}" in output
    assert "warning" not in output
    assert remaining(stack) == set()
    assert queued_bodies(stack) == []


def test_the_cli_says_when_no_ledger_was_given(
    stack: ResourceValues, capsys: pytest.CaptureFixture[str]
) -> None:
    park(stack, postback_body(TEST_API_SECRET), "verified")
    assert main(args(stack)) == 0
    assert "no order ledger given (--ledger-table)" in capsys.readouterr().out


# One short attempt per call: what matters is that the run goes on, and how often it waits.
IMPATIENT = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=1, read_timeout=1)


@pytest.mark.parametrize("fault", ["refuse", "hang", "trickle", "fail"])
def test_an_unreachable_ledger_never_keeps_an_update_from_the_queue(
    stack: ResourceValues, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    # A trickling endpoint trips no read timeout: only the per-call limit ends it.
    monkeypatch.setattr(redrive_module, "LEDGER_CALL_SECONDS", 2.0)
    keys = [
        park_at(
            stack,
            postback_body(TEST_API_SECRET, order_id=order_id, status="COMPLETE"),
            "verified",
            datetime(2026, 11, 30, 9, 15, 0, step, tzinfo=UTC),
        )
        for step, order_id in enumerate(ORDER_IDS[:3])
    ]
    with HangingEndpoint() as hanging, TricklingEndpoint(0.5) as trickling, FailingEndpoint() as failing:
        endpoints = {"hang": hanging, "trickle": trickling, "fail": failing}
        url = endpoints[fault].url if fault in endpoints else f"http://127.0.0.1:{closed_port()}"
        ledger = ledger_of(stack, boto3.client("dynamodb", endpoint_url=url, config=IMPATIENT))
        started = time.monotonic()
        report = redrive(
            boto3.client("s3"), boto3.client("sqs"), bucket_of(stack), queue_of(stack), TEST_API_SECRET,
            ledger=ledger,
        )  # fmt: skip
        seconds = time.monotonic() - started
        if fault in endpoints:
            # Asked once: after the first failure the run goes on without it.
            assert endpoints[fault].connections_accepted == 1
    assert report.sent == keys
    assert report.unchecked == keys
    assert report.unrecorded == keys
    assert report.ledger_unavailable is not None
    assert report.ledger_unavailable.startswith("DynamoDB ")
    assert report.ok  # a duplicate is possible, a loss is not: the run did its job
    assert statuses_by_order(drain(stack)) == {order_id: ["COMPLETE"] for order_id in ORDER_IDS[:3]}
    assert remaining(stack) == set()
    assert seconds < 6.0


def test_a_ledger_that_fails_after_the_check_leaves_the_update_sent(
    stack: ResourceValues, aws_env: str
) -> None:
    # Reads answer, writes are refused: the update is on the queue, the ledger just does not know.
    def refuse_writes(method: str, path: str, headers: Mapping[str, str], body: bytes) -> Refusal | None:
        return DYNAMODB_REFUSAL if headers.get("X-Amz-Target", "").endswith(".UpdateItem") else None

    key = park(
        stack, postback_body(TEST_API_SECRET, order_id="251130000033339", status="COMPLETE"), "verified"
    )
    with FaultyEndpoint(aws_env, refuse_writes) as dynamodb_endpoint:
        ledger = ledger_of(
            stack, boto3.client("dynamodb", endpoint_url=dynamodb_endpoint.url, config=IMPATIENT)
        )
        report = redrive(
            boto3.client("s3"), boto3.client("sqs"), bucket_of(stack), queue_of(stack), TEST_API_SECRET,
            ledger=ledger,
        )  # fmt: skip
    assert report.sent == [key]
    assert report.unchecked == []  # it was checked: the ledger answered the read
    assert report.unrecorded == [key]
    assert report.ledger_unavailable == "DynamoDB UpdateItem failed (AccessDeniedException)"
    assert len(drain(stack)) == 1
    assert remaining(stack) == set()


DYNAMODB_REFUSAL: Refusal = (
    400,
    b'{"__type":"com.amazon.coral.service#AccessDeniedException","message":"refused"}',
    "application/x-amz-json-1.0",
)


def test_a_redriven_state_carries_its_states_deduplication_id_and_source(stack: ResourceValues) -> None:
    # The same id the postback path and the reconciler give this state: within SQS's window, a
    # redriven postback and a recovered state of one order state are one message.
    order_id = "251130000033340"
    park(
        stack,
        postback_body(TEST_API_SECRET, order_id=order_id, status="UPDATE", filled_quantity=2),
        "verified",
    )
    redrive(
        boto3.client("s3"), boto3.client("sqs"), bucket_of(stack), queue_of(stack), TEST_API_SECRET,
        ledger=ledger_of(stack),
    )  # fmt: skip
    [message] = boto3.client("sqs").receive_message(
        QueueUrl=queue_of(stack), MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"]
    )["Messages"]
    assert message["Attributes"]["MessageDeduplicationId"] == OrderState(order_id, "OPEN", 2).deduplication_id
    assert message["MessageAttributes"]["source"]["StringValue"] == "redrive"
    assert ledger_of(stack).orders_of(LEDGER_USER)[order_id].claims == {
        Claim("OPEN", 2, "2022-03-03 09:24:25")
    }
