"""The postback function, invoked with HTTP API events, against a moto server over HTTP."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from local.provision import ResourceValues
from local.samples import http_api_event, postback_body
from tests.conftest import (
    TEST_API_KEY,
    TEST_API_SECRET,
    FakeLambdaContext,
    closed_port,
    load_function,
    reset_layer_caches,
)
from tests.faults import FailingEndpoint
from tests.integration.test_postback_logging import counted_metrics

Invoke = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def invoke(stack: ResourceValues, monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    """A fresh postback container wired to this test's resources, as the template wires it."""
    monkeypatch.setenv("ORDER_UPDATES_QUEUE_URL", stack["OrderUpdatesQueue"]["Ref"])
    monkeypatch.setenv("UNDELIVERED_BUCKET", stack["UndeliveredPostbacksBucket"]["Ref"])
    monkeypatch.setenv("API_CREDENTIALS_SECRET_ID", stack["ApiCredentialsSecret"]["Ref"])
    monkeypatch.setenv("MAX_POSTBACK_BYTES", "65536")
    reset_layer_caches()
    app = load_function("postback")
    calls = itertools.count(1)

    def call(
        body: bytes | None, method: str = "POST", base64_body: bool | None = None
    ) -> tuple[int, dict[str, Any]]:
        event = http_api_event(
            method, "/postback", body, base64_body=base64_body, request_id=f"req-{next(calls)}"
        )
        response = app.handler(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    yield call
    reset_layer_caches()


def queued(stack: ResourceValues) -> list[Any]:
    sqs = boto3.client("sqs")
    messages: list[Any] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=stack["OrderUpdatesQueue"]["Ref"],
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)


def parked(stack: ResourceValues) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    bucket = stack["UndeliveredPostbacksBucket"]["Ref"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def test_valid_postback_is_queued_per_the_message_contract(invoke: Invoke, stack: ResourceValues) -> None:
    body = postback_body(TEST_API_SECRET)
    status, answer = invoke(body)
    assert (status, answer) == (200, {"status": "queued", "order_id": "220303000308932"})

    [message] = queued(stack)
    assert message["Body"] == body.decode()
    assert message["Attributes"]["MessageGroupId"] == "220303000308932"
    # The order state's id, the same for every source: (order_id, status, filled_quantity).
    state = json.loads(body)
    state_id = f"220303000308932|COMPLETE|{state['filled_quantity']}"
    assert message["Attributes"]["MessageDeduplicationId"] == hashlib.sha256(state_id.encode()).hexdigest()
    attributes = {name: value["StringValue"] for name, value in message["MessageAttributes"].items()}
    assert attributes == {
        "user_id": "AB1234",
        "order_id": "220303000308932",
        "status": "COMPLETE",
        "source": "postback",
    }
    assert parked(stack) == {}


def test_the_same_postback_twice_is_one_message(invoke: Invoke, stack: ResourceValues) -> None:
    body = postback_body(TEST_API_SECRET)
    assert invoke(body)[0] == 200
    assert invoke(body)[0] == 200
    assert len(queued(stack)) == 1


def test_updates_of_one_order_keep_their_order_and_others_are_separate_groups(
    invoke: Invoke, stack: ResourceValues
) -> None:
    for status in ("OPEN", "COMPLETE"):
        assert invoke(postback_body(TEST_API_SECRET, status=status))[0] == 200
    assert invoke(postback_body(TEST_API_SECRET, order_id="220303000308999"))[0] == 200
    messages = queued(stack)
    first_order = [
        json.loads(m["Body"])["status"]
        for m in messages
        if m["Attributes"]["MessageGroupId"] == "220303000308932"
    ]
    assert first_order == ["OPEN", "COMPLETE"]
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {"220303000308932", "220303000308999"}


def test_base64_encoded_body_is_decoded_and_queued_as_sent(invoke: Invoke, stack: ResourceValues) -> None:
    body = postback_body(TEST_API_SECRET)
    assert invoke(body, base64_body=True)[0] == 200
    assert queued(stack)[0]["Body"] == body.decode()


def test_tampered_postback_is_refused_and_only_kept_aside(invoke: Invoke, stack: ResourceValues) -> None:
    body = postback_body(TEST_API_SECRET).replace(b"2022-03-03 09:24:25", b"2022-03-03 09:24:26", 1)
    status, answer = invoke(body)
    assert status == 403
    assert answer["status"] == "rejected"
    assert "checksum" in answer["reason"]
    assert queued(stack) == []
    # Kept aside (in case the api_secret was regenerated at Kite), never queued.
    [(key, stored)] = parked(stack).items()
    assert key.startswith("undelivered/rejected/")
    assert stored == body


@pytest.mark.parametrize(
    ("body", "status", "reason_word"),
    [
        (b'{"order_id": "1",', 400, "JSON"),
        (b"[]", 400, "object"),
        (b"\xff\xfe", 400, "UTF-8"),
        (None, 400, "empty"),
        (json.dumps({"order_id": "1", "order_timestamp": "2022-03-03 09:24:25"}).encode(), 400, "checksum"),
        (b'{"order_id": "' + b"1" * 70000 + b'"}', 413, "limit"),
    ],
)
def test_malformed_postbacks_get_a_4xx_with_a_reason_and_nothing_stored(
    invoke: Invoke, stack: ResourceValues, body: bytes | None, status: int, reason_word: str
) -> None:
    got_status, answer = invoke(body)
    assert got_status == status
    assert reason_word in answer["reason"]
    assert queued(stack) == []
    assert parked(stack) == {}


def test_body_flagged_base64_that_is_not_base64_is_400(stack: ResourceValues, invoke: Invoke) -> None:
    app = load_function("postback")
    event = http_api_event("POST", "/postback", b"", base64_body=True)
    event["body"] = "this is *not* base64"
    response = app.handler(event, FakeLambdaContext())
    assert response["statusCode"] == 400
    assert "base64" in json.loads(response["body"])["reason"]
    assert queued(stack) == []


def test_wrong_method_is_405(invoke: Invoke, stack: ResourceValues) -> None:
    status, answer = invoke(None, method="GET")
    assert status == 405
    assert answer["reason"] == "use POST"


def test_queue_gone_parks_the_verified_postback_and_answers_202(
    invoke: Invoke, stack: ResourceValues
) -> None:
    boto3.client("sqs").delete_queue(QueueUrl=stack["OrderUpdatesQueue"]["Ref"])
    body = postback_body(TEST_API_SECRET)
    status, answer = invoke(body)
    assert status == 202
    assert answer["status"] == "parked"
    [(key, stored)] = parked(stack).items()
    assert key.startswith("undelivered/verified/")
    assert stored == body


def test_sqs_endpoint_refusing_connections_parks_the_postback(
    invoke: Invoke, stack: ResourceValues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{closed_port()}")
    reset_layer_caches()
    body = postback_body(TEST_API_SECRET)
    assert invoke(body)[0] == 202
    assert list(parked(stack).values()) == [body]


def test_sqs_and_s3_both_down_is_503_never_2xx(
    invoke: Invoke, stack: ResourceValues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{closed_port()}")
    reset_layer_caches()
    status, answer = invoke(postback_body(TEST_API_SECRET))
    assert status == 503
    assert answer["status"] == "error"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert parked(stack) == {}


def test_placeholder_credentials_park_the_postback_unverified_and_answer_503(
    invoke: Invoke, stack: ResourceValues
) -> None:
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack["ApiCredentialsSecret"]["Ref"],
        SecretString='{"api_key": "REPLACE_ME", "api_secret": "REPLACE_ME"}',
    )
    body = postback_body(TEST_API_SECRET)
    status, answer = invoke(body)
    assert status == 503
    assert "credentials" in answer["reason"]
    assert queued(stack) == []
    [(key, stored)] = parked(stack).items()
    assert key.startswith("undelivered/unverified/")
    assert stored == body


def test_credentials_put_in_after_the_placeholder_are_picked_up_without_a_restart(
    invoke: Invoke, stack: ResourceValues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_MIN_REFRESH_SECONDS", "0.5")
    reset_layer_caches()
    secrets = boto3.client("secretsmanager")
    secret_id = stack["ApiCredentialsSecret"]["Ref"]
    secrets.put_secret_value(
        SecretId=secret_id, SecretString='{"api_key": "REPLACE_ME", "api_secret": "REPLACE_ME"}'
    )
    assert invoke(postback_body(TEST_API_SECRET, status="OPEN"))[0] == 503
    secrets.put_secret_value(
        SecretId=secret_id, SecretString=json.dumps({"api_key": TEST_API_KEY, "api_secret": TEST_API_SECRET})
    )
    time.sleep(0.6)
    assert invoke(postback_body(TEST_API_SECRET, status="COMPLETE"))[0] == 200  # same warm container
    assert len(queued(stack)) == 1


def test_unreadable_credentials_park_the_postback_unverified(invoke: Invoke, stack: ResourceValues) -> None:
    boto3.client("secretsmanager").delete_secret(
        SecretId=stack["ApiCredentialsSecret"]["Ref"], ForceDeleteWithoutRecovery=True
    )
    status, _ = invoke(postback_body(TEST_API_SECRET))
    assert status == 503
    assert [key.split("/")[1] for key in parked(stack)] == ["unverified"]


def test_credentials_are_read_once_per_container_not_per_request(
    invoke: Invoke, stack: ResourceValues
) -> None:
    assert invoke(postback_body(TEST_API_SECRET, status="OPEN"))[0] == 200
    # With the secret gone, a warm container still verifies from its cache.
    boto3.client("secretsmanager").delete_secret(
        SecretId=stack["ApiCredentialsSecret"]["Ref"], ForceDeleteWithoutRecovery=True
    )
    assert invoke(postback_body(TEST_API_SECRET, status="COMPLETE"))[0] == 200
    assert len(queued(stack)) == 2


def test_a_rotated_secret_is_reread_before_a_postback_is_refused(
    invoke: Invoke, stack: ResourceValues
) -> None:
    assert invoke(postback_body(TEST_API_SECRET, status="OPEN"))[0] == 200
    rotated = "kt-rotated-secret-77aa"
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack["ApiCredentialsSecret"]["Ref"],
        SecretString=json.dumps({"api_key": TEST_API_KEY, "api_secret": rotated}),
    )
    assert invoke(postback_body(rotated, status="COMPLETE"))[0] == 200
    # The old secret is no longer accepted once the new one is known.
    assert invoke(postback_body(TEST_API_SECRET, status="CANCELLED"))[0] == 403
    assert len(queued(stack)) == 2


def test_an_unexpected_error_still_keeps_the_postback_and_shows_no_trace(
    invoke: Invoke, stack: ResourceValues, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kitehooks.orders import queue

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("a bug with a secret-looking message")

    monkeypatch.setattr(queue, "publish", broken)
    body = postback_body(TEST_API_SECRET)
    status, answer = invoke(body)
    assert (status, answer) == (503, {"status": "error", "reason": "internal error; try again"})
    [(key, stored)] = parked(stack).items()
    assert key.startswith("undelivered/unverified/")
    assert stored == body


def test_missing_setting_is_a_clear_503(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORDER_UPDATES_QUEUE_URL")
    reset_layer_caches()
    status, answer = invoke(postback_body(TEST_API_SECRET))
    assert status == 503
    assert "ORDER_UPDATES_QUEUE_URL" in answer["reason"]


def test_metrics_count_outcomes_with_the_rejection_reason(
    invoke: Invoke, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke(postback_body(TEST_API_SECRET))
    invoke(b"[]")
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    # PostbackEnqueued: the template's metric filter on the accepted line; the others: embedded.
    assert counted_metrics(emitted)["PostbackEnqueued"] == [{"service": "kitehooks"}]
    assert any(m.get("reason") == "not_an_object" and "PostbackRejected" in m for m in emitted)


def test_logs_carry_the_api_gateway_request_id_as_correlation_id(
    invoke: Invoke, service_logs: io.StringIO
) -> None:
    invoke(postback_body(TEST_API_SECRET))
    records = [json.loads(line) for line in service_logs.getvalue().splitlines()]
    [enqueued] = [record for record in records if record["message"] == "postback enqueued"]
    assert enqueued["correlation_id"].startswith("req-")
    assert enqueued["order_id"] == "220303000308932"


def test_no_secret_or_checksum_reaches_logs_or_responses(
    invoke: Invoke,
    stack: ResourceValues,
    monkeypatch: pytest.MonkeyPatch,
    service_logs: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    valid = postback_body(TEST_API_SECRET)
    checksum = json.loads(valid)["checksum"]
    tampered = valid.replace(b"2022-03-03 09:24:25", b"2022-03-03 09:24:26", 1)
    answers = [invoke(valid), invoke(valid), invoke(tampered), invoke(b"[]")]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{closed_port()}")
    reset_layer_caches()
    answers.append(invoke(postback_body(TEST_API_SECRET, status="OPEN")))
    captured = capsys.readouterr()
    output = service_logs.getvalue() + captured.out + captured.err + json.dumps(answers)
    assert "postback enqueued" in output  # the capture did see the logs
    for planted in (TEST_API_SECRET, checksum, json.loads(tampered)["checksum"]):
        assert planted not in output
    assert base64.b64encode(TEST_API_SECRET.encode()).decode() not in output


def test_an_order_id_that_is_not_kite_shaped_is_refused_before_anything_is_stored(
    invoke: Invoke, stack: ResourceValues, service_logs: io.StringIO
) -> None:
    huge = "9" * 20_000
    for order_id in (huge, "220303000308932 OR 1=1", "ordér", "a" * 65):
        # Signed correctly: even a genuine-looking one must not be parked for ever when SQS
        # could never take its order_id as a MessageGroupId.
        status, answer = invoke(postback_body(TEST_API_SECRET, order_id=order_id))
        assert status == 400
        assert "order_id" in answer["reason"]
    assert queued(stack) == []
    assert parked(stack) == {}
    assert huge[:100] not in service_logs.getvalue()


def test_a_kite_shaped_order_id_is_accepted(invoke: Invoke, stack: ResourceValues) -> None:
    assert invoke(postback_body(TEST_API_SECRET, order_id="1" * 64))[0] == 200
    assert invoke(postback_body(TEST_API_SECRET, order_id="240101-A.b:c_9"))[0] == 200
    assert len(queued(stack)) == 2


def test_junk_costs_at_most_16_kb_stored_and_1_kb_logged_per_request(
    invoke: Invoke,
    stack: ResourceValues,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1,000 unauthenticated requests of the costliest kinds: the largest body the function
    accepts with a wrong checksum (kept under rejected/), and long junk in every logged field."""
    # As deployed: Tracing is Active, so every line may carry the X-Ray trace id.
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
    limit = 16 * 1024
    base = postback_body("not-the-api-secret", status="\U0001f600" * 500, user_id="U" * 5000)
    padding = limit - len(base) - len(',"pad":""')
    largest = base[:-1] + b',"pad":"' + b"x" * padding + b'"}'
    assert len(largest) == limit
    kinds = [
        largest,
        largest.replace(b"220303000308932", b"220303000308933"),
        b'{"order_id": "' + b"1" * 15_000 + b'"}',
        b'{"' + b"k" * 8000 + b'": 1, "' + b"k" * 8000 + b'": 2}',
        b"\xff" * limit,
        b"x" * (limit + 1),
    ]
    statuses = [invoke(kinds[index % len(kinds)])[0] for index in range(1000)]
    assert set(statuses) <= {400, 403, 413}
    assert 403 in statuses

    s3 = boto3.client("s3")
    bucket = stack["UndeliveredPostbacksBucket"]["Ref"]
    versions = s3.list_object_versions(Bucket=bucket).get("Versions", [])
    assert all(version["Key"].startswith("undelivered/rejected/") for version in versions)
    stored_bytes = sum(version["Size"] for version in versions)
    assert stored_bytes / 1000 <= limit

    # Everything the function printed (its log lines carry their metrics), each line once.
    output = capsys.readouterr().out
    assert output.count('"message":"postback rejected"') == 1000  # every line is measured
    logged_bytes = len(output.encode())
    assert logged_bytes / 1000 <= 1024, f"{logged_bytes / 1000:.0f} bytes logged per junk request"


def test_unverifiable_postbacks_are_counted_apart_from_genuine_parked_ones(
    invoke: Invoke, stack: ResourceValues, capsys: pytest.CaptureFixture[str]
) -> None:
    """The parked-postback alarm means "a real update is waiting": junk that cannot be verified
    (placeholder credentials) counts as PostbackParkedUnverified, never as PostbackParked."""
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack["ApiCredentialsSecret"]["Ref"],
        SecretString='{"api_key": "REPLACE_ME", "api_secret": "REPLACE_ME"}',
    )
    assert invoke(postback_body("anything"))[0] == 503
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = {m["Name"] for line in emitted for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert "PostbackParkedUnverified" in names
    assert "PostbackParked" not in names


def test_a_failing_secrets_manager_is_tried_twice_in_all_and_not_read_again_at_once(
    invoke: Invoke, stack: ResourceValues, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two attempts per call (botocore's max_attempts counts retries: total_max_attempts is the
    bound), and no forced re-read of the secret after the service failed."""
    with FailingEndpoint() as failing:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", failing.url)
        reset_layer_caches()
        status, answer = invoke(postback_body(TEST_API_SECRET))
        assert status == 503
        assert "unverified" in answer["reason"]
        assert failing.requests == 2
    assert [key.split("/")[1] for key in parked(stack)] == ["unverified"]


def test_characters_sqs_cannot_carry_are_refused_before_anything_is_stored(
    invoke: Invoke, stack: ResourceValues
) -> None:
    """Signed, but SQS would refuse the message for ever: parked, then refused at every redrive,
    holding back the order's later updates. A 400 now says why instead."""
    escaped_in_status = postback_body(TEST_API_SECRET, status="COMPLETE\x01")  # "\u0001" in the JSON
    raw_in_body = postback_body(TEST_API_SECRET).replace(b'"XXXXXX"', '"\uffff"'.encode())  # raw U+FFFF
    for body in (escaped_in_status, raw_in_body):
        status, answer = invoke(body)
        assert status == 400
        assert "SQS cannot carry" in answer["reason"]
    assert queued(stack) == []
    assert parked(stack) == {}


def test_parked_updates_keep_the_order_kite_sent_them_in_not_the_order_they_were_parked(
    stack: ResourceValues, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OPEN reached API Gateway first but its invocation waited longer (SQS hanging) than that
    of the COMPLETE after it (SQS refusing): parked by the time they were received, redrive
    still sends OPEN first."""
    from kitehooks.postbacks.redrive import redrive

    monkeypatch.setenv("ORDER_UPDATES_QUEUE_URL", stack["OrderUpdatesQueue"]["Ref"])
    monkeypatch.setenv("UNDELIVERED_BUCKET", stack["UndeliveredPostbacksBucket"]["Ref"])
    monkeypatch.setenv("API_CREDENTIALS_SECRET_ID", stack["ApiCredentialsSecret"]["Ref"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{closed_port()}")
    reset_layer_caches()
    app = load_function("postback")
    now_ms = int(time.time() * 1000)
    received = {"OPEN": now_ms - 800, "COMPLETE": now_ms - 100}  # ms; OPEN first
    for status in ("COMPLETE", "OPEN"):  # ... but parked last
        event = http_api_event("POST", "/postback", postback_body(TEST_API_SECRET, status=status))
        event["requestContext"]["timeEpoch"] = received[status]
        assert app.handler(event, FakeLambdaContext())["statusCode"] == 202
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS")
    report = redrive(
        boto3.client("s3"),
        boto3.client("sqs"),
        stack["UndeliveredPostbacksBucket"]["Ref"],
        stack["OrderUpdatesQueue"]["Ref"],
        TEST_API_SECRET,
    )
    assert len(report.sent) == 2
    assert [json.loads(message["Body"])["status"] for message in queued(stack)] == ["OPEN", "COMPLETE"]
    reset_layer_caches()
