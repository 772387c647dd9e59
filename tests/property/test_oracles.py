"""What the properties rely on to judge an answer: the view of the emulator's stores, Kite's
checksum rule, and the checks on pages and redirects. Each is shown to say no as well as yes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import boto3
import pytest

from local.provision import ResourceValues
from local.samples import postback_body
from tests.conftest import TEST_API_SECRET
from tests.property.conftest import (
    EmulatorStores,
    QueuedMessage,
    SecretVersion,
    StoredItem,
    StoredObject,
    assert_no_secret,
    check_page_answer,
    cookies_set,
    is_same_site_path,
)
from tests.property.test_postback_properties import carries_valid_checksum, checksums_to_keep_secret


def test_the_store_view_sees_writes_made_over_http(
    module_stack: ResourceValues, stores: EmulatorStores
) -> None:
    stores.changes()
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    dynamodb, secrets = boto3.client("dynamodb"), boto3.client("secretsmanager")
    sqs.get_queue_attributes(QueueUrl=module_stack["OrderUpdatesQueue"]["Ref"], AttributeNames=["All"])
    s3.list_objects_v2(Bucket=module_stack["UndeliveredPostbacksBucket"]["Ref"])
    assert stores.changes().nothing  # reading stores nothing

    sqs.send_message(
        QueueUrl=module_stack["OrderUpdatesQueue"]["Ref"],
        MessageBody='{"order_id":"1"}',
        MessageGroupId="1",
        MessageDeduplicationId="d1",
    )
    bucket = module_stack["UndeliveredPostbacksBucket"]["Ref"]
    s3.put_object(Bucket=bucket, Key="undelivered/rejected/x.json", Body=b"\x00body")
    s3.put_object(Bucket=bucket, Key="undelivered/rejected/x.json", Body=b"again")  # a new version
    table = module_stack["LoginStatesTable"]["Ref"]
    dynamodb.put_item(TableName=table, Item={"state_key": {"S": "k"}, "expires_at": {"N": "1"}})
    name = f"store-view-{module_stack['LoginStatesTable']['Ref']}/AB1234"
    secrets.create_secret(Name=name, SecretString='{"access_token": "t"}')

    changes = stores.changes()
    assert changes.messages == [
        QueuedMessage(module_stack["OrderUpdatesQueue"]["QueueName"], '{"order_id":"1"}', "1", "d1")
    ]
    assert changes.objects == [
        StoredObject(bucket, "undelivered/rejected/x.json", b"\x00body"),
        StoredObject(bucket, "undelivered/rejected/x.json", b"again"),
    ]
    assert changes.items == [StoredItem(table, {"state_key": {"S": "k"}, "expires_at": {"N": "1"}})]
    assert changes.secret_versions == [SecretVersion(name, '{"access_token": "t"}')]
    assert stores.changes().nothing  # each thing is reported once

    secrets.put_secret_value(SecretId=name, SecretString='{"access_token": "u"}')
    assert stores.changes().secret_versions == [SecretVersion(name, '{"access_token": "u"}')]
    s3.delete_object(Bucket=bucket, Key="undelivered/rejected/x.json")
    assert stores.changes().objects == [
        StoredObject(bucket, "undelivered/rejected/x.json", b"", delete_marker=True)
    ]
    assert [m.body for m in stores.queued(module_stack["OrderUpdatesQueue"]["QueueName"])] == [
        '{"order_id":"1"}'
    ]


def test_kites_checksum_rule_is_computed_independently_of_the_handler() -> None:
    signed = postback_body(TEST_API_SECRET)
    assert carries_valid_checksum(signed)
    assert carries_valid_checksum(signed.replace(b'"checksum":"', b'"checksum": "'))  # same JSON
    assert not carries_valid_checksum(signed.replace(b"09:24:25", b"09:24:26", 1))
    assert not carries_valid_checksum(postback_body("another-secret"))
    assert not carries_valid_checksum(b"[]")
    assert not carries_valid_checksum(b'{"order_id": "\\ud800", "order_timestamp": "", "checksum": ""}')


def test_the_checksums_to_keep_secret_are_the_sent_and_the_expected_one() -> None:
    tampered = postback_body(TEST_API_SECRET).replace(b"09:24:25", b"09:24:26", 1)
    sent = json.loads(tampered)["checksum"]
    expected = hashlib.sha256(f"2203030003089322022-03-03 09:24:26{TEST_API_SECRET}".encode()).hexdigest()
    assert set(checksums_to_keep_secret(tampered)) == {sent, expected}
    # A value the client also put where it may be echoed (its order_id) is not a secret.
    echoed = json.dumps({"order_id": "a" * 64, "order_timestamp": "t", "checksum": "a" * 64}).encode()
    assert "a" * 64 not in checksums_to_keep_secret(echoed)


def page(status: int, body: str, **headers: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "text/html; charset=utf-8", **headers},
        "body": body,
    }


def test_a_page_answer_needs_a_reason_and_no_5xx() -> None:
    assert check_page_answer(page(400, "<p>the login state is missing</p>")) == 400
    assert (
        check_page_answer(page(400, '<p class="brand">kitehooks</p><p>start <a href="/login">again</a></p>'))
        == 400
    )
    assert check_page_answer({"statusCode": 302, "headers": {"Location": "https://kite"}, "body": ""}) == 302
    for bad in (
        page(500, "<p>Something went wrong</p>"),
        page(400, "<p> </p>"),
        page(400, '<p class="brand">kitehooks</p><p><a href="/login"></a></p>'),
        page(400, "no paragraph"),
        {"statusCode": 400, "headers": {"Content-Type": "application/json"}, "body": '{"reason": "x"}'},
        {"statusCode": 302, "headers": {}, "body": ""},
        page(400, "<p>x</p>", Location="/a\r\nSet-Cookie: x=1"),
    ):
        with pytest.raises(AssertionError):
            check_page_answer(bad)


def test_a_redirect_stays_on_this_site_only_for_a_plain_path() -> None:
    for path in ("/", "/orders?view=open", "/%2F%2Fevil.example", "/é"):
        assert is_same_site_path(path)
    for path in ("//evil.example", "/\\evil.example", "/\t/evil.example", "https://evil.example", "", "a"):
        assert not is_same_site_path(path)


def test_cookies_set_ignores_the_ones_cleared() -> None:
    answer = {"cookies": ["a=1; Path=/", "b=; Max-Age=0", "c=2; Max-Age=0"]}
    assert cookies_set(answer) == {"a": "1"}


def test_the_secret_scan_finds_the_planted_secret() -> None:
    assert_no_secret("nothing to see", "token-1")
    with pytest.raises(AssertionError):
        assert_no_secret(f"prefix {TEST_API_SECRET} suffix")
    with pytest.raises(AssertionError):
        assert_no_secret("a token-1 b", "token-1")
