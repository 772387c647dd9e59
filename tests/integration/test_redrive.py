"""`make redrive`: parked postbacks go back to the queue, checked again on the way."""

from __future__ import annotations

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
