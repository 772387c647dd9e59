"""`make redrive`: parked postbacks go back to the queue, checked again on the way."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest

from kitehooks import undelivered
from kitehooks.redrive import main
from local.provision import ResourceValues
from local.samples import postback_body
from tests.conftest import TEST_API_SECRET


def park(stack: ResourceValues, body: bytes, verification: undelivered.Verification) -> str:
    key = undelivered.object_key(body.decode(), verification, datetime.now(UTC))
    boto3.client("s3").put_object(Bucket=stack["UndeliveredPostbacksBucket"]["Ref"], Key=key, Body=body)
    return key


def remaining(stack: ResourceValues) -> set[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=stack["UndeliveredPostbacksBucket"]["Ref"])
    return {item["Key"] for item in listing.get("Contents", [])}


def queued_bodies(stack: ResourceValues) -> list[str]:
    messages = (
        boto3.client("sqs")
        .receive_message(QueueUrl=stack["OrderUpdatesQueue"]["Ref"], MaxNumberOfMessages=10)
        .get("Messages", [])
    )
    return [message["Body"] for message in messages]


def args(stack: ResourceValues, *extra: str) -> list[str]:
    return [
        "--bucket",
        stack["UndeliveredPostbacksBucket"]["Ref"],
        "--queue-url",
        stack["OrderUpdatesQueue"]["Ref"],
        "--secret-id",
        stack["ApiCredentialsSecret"]["Ref"],
        *extra,
    ]


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
    assert sorted(queued_bodies(stack)) == sorted([verified.decode(), unverified.decode()])
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


def test_parked_postbacks_are_sent_oldest_first_across_folders(stack: ResourceValues) -> None:
    bucket = stack["UndeliveredPostbacksBucket"]["Ref"]
    s3 = boto3.client("s3")
    updates = ["OPEN", "TRIGGER PENDING", "COMPLETE"]
    folders: list[undelivered.Verification] = ["unverified", "verified", "rejected"]
    for minute, (status, folder) in enumerate(zip(updates, folders, strict=True)):
        body = postback_body(TEST_API_SECRET, status=status)
        key = undelivered.object_key(body.decode(), folder, datetime(2026, 11, 30, 9, minute, tzinfo=UTC))
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert main(args(stack)) == 0
    assert [json.loads(body)["status"] for body in queued_bodies(stack)] == updates


def test_a_queue_failure_leaves_the_rest_going_and_the_object_in_place(
    stack: ResourceValues, capsys: pytest.CaptureFixture[str]
) -> None:
    key = park(stack, postback_body(TEST_API_SECRET), "verified")
    gone = stack["OrderUpdatesQueue"]["Ref"] + "-gone"
    assert main([*args(stack)[:2], "--queue-url", gone, *args(stack)[4:]]) == 1
    assert remaining(stack) == {key}
    assert "not sent, left in place" in capsys.readouterr().out


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
