"""`make redrive`: parked postbacks go back to the queue, checked again on the way, in the order
they were received."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
import requests

from kitehooks.postbacks import undelivered
from kitehooks.postbacks.redrive import main, redrive
from local.provision import ResourceValues
from local.samples import postback_body
from tests.conftest import TEST_API_SECRET

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
