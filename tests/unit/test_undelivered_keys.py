"""Parked postbacks' keys: the receive time to the microsecond, a tie-breaker that never collides,
and an order that redrive can follow, old keys included."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from kitehooks.postbacks import undelivered

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

IST = timezone(timedelta(hours=5, minutes=30))
OPEN = b'{"order_id":"251130000012346","status":"OPEN"}'
COMPLETE = b'{"order_id":"251130000012346","status":"COMPLETE"}'


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def at(second: int, microsecond: int = 0) -> datetime:
    return datetime(2026, 11, 30, 9, 15, second, microsecond, tzinfo=UTC)


def redrive_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=undelivered.received_order)


def test_the_key_carries_the_receive_time_in_utc_to_the_microsecond() -> None:
    received = datetime(2026, 11, 30, 14, 45, 7, 123_456, tzinfo=IST)
    key = undelivered.object_key(OPEN, "verified", received)
    assert key == f"undelivered/verified/2026/11/30/091507.123456-{digest(OPEN)}.json"
    assert undelivered.object_key(OPEN.decode(), "verified", received) == key  # str or bytes alike
    assert undelivered.received_at(key) == received


def test_updates_within_one_second_sort_by_receive_time_not_by_hash() -> None:
    # COMPLETE's digest sorts before OPEN's: keys of whole seconds put it first.
    assert digest(COMPLETE) < digest(OPEN)
    opened = undelivered.object_key(OPEN, "unverified", at(0, 400_000))
    completed = undelivered.object_key(COMPLETE, "verified", at(0, 400_001))
    assert redrive_order([completed, opened]) == [opened, completed]


def test_two_bodies_in_the_same_microsecond_never_collide_and_always_sort_alike() -> None:
    same_instant = at(0, 1)
    keys = [undelivered.object_key(body, "verified", same_instant) for body in (OPEN, COMPLETE)]
    assert len(set(keys)) == 2
    assert redrive_order(keys) == redrive_order(list(reversed(keys)))
    # The same body twice is the same update, and the queue's deduplication id says so too.
    assert undelivered.object_key(OPEN, "verified", same_instant) == keys[0]


def test_old_keys_of_whole_seconds_sort_among_new_ones() -> None:
    old = f"undelivered/verified/2026/11/30/091500-{digest(OPEN)}.json"
    assert undelivered.received_at(old) == at(0)
    just_before = undelivered.object_key(COMPLETE, "verified", at(0) - timedelta(microseconds=1))
    same_second = undelivered.object_key(COMPLETE, "rejected", at(0, 1))
    next_second = undelivered.object_key(COMPLETE, "unverified", at(1))
    assert redrive_order([next_second, same_second, old, just_before]) == [
        just_before,
        old,  # parked before the upgrade: at the start of its second
        same_second,
        next_second,
    ]


@pytest.mark.parametrize(
    "stray",
    [
        "undelivered/verified/notes.txt",
        f"undelivered/verified/2026/13/30/091500.000000-{'0' * 64}.json",  # month 13
        f"undelivered/verified/2026/11/30/0915-{'0' * 64}.json",
    ],
)
def test_keys_not_written_by_park_go_last(stray: str) -> None:
    assert undelivered.received_at(stray) is None
    latest = undelivered.object_key(OPEN, "verified", datetime(2099, 12, 31, tzinfo=UTC))
    assert redrive_order([stray, latest]) == [latest, stray]


class RecordingS3:
    """Stands in for the S3 client: records put_object, or fails as told."""

    def __init__(self, failure: BaseException | None = None) -> None:
        self.failure = failure
        self.puts: list[dict[str, Any]] = []

    def put_object(self, **request: Any) -> dict[str, Any]:
        if self.failure is not None:
            raise self.failure
        self.puts.append(request)
        return {}


def park(s3: RecordingS3) -> str:
    # Positional, as the postback receiver calls it.
    return undelivered.park(
        cast("S3Client", s3), "bucket", OPEN, "verified", "queue-unavailable", "251130000012346", "req-1"
    )


def test_park_stores_the_body_under_the_time_it_was_received() -> None:
    s3 = RecordingS3()
    before = datetime.now(UTC)
    key = park(s3)
    after = datetime.now(UTC)
    assert re.fullmatch(rf"undelivered/verified/\d{{4}}/\d\d/\d\d/\d{{6}}\.\d{{6}}-{digest(OPEN)}\.json", key)
    received = undelivered.received_at(key)
    assert received is not None
    assert before <= received <= after
    [put] = s3.puts
    assert (put["Bucket"], put["Key"], put["Body"]) == ("bucket", key, OPEN)
    assert put["Metadata"] == {
        "reason": "queue-unavailable",
        "order-id": "251130000012346",
        "request-id": "req-1",
    }


@pytest.mark.parametrize(
    "failure",
    [
        ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject"),
        EndpointConnectionError(endpoint_url="https://s3.ap-south-1.amazonaws.com"),
    ],
)
def test_park_says_parking_failed_when_s3_does_not_take_it(failure: Exception) -> None:
    with pytest.raises(undelivered.ParkingFailed, match=type(failure).__name__):
        park(RecordingS3(failure))


def test_park_lets_other_errors_through() -> None:
    # e.g. the invocation's deadline (a BaseException) or a bug: not "S3 failed".
    with pytest.raises(KeyboardInterrupt):
        park(RecordingS3(KeyboardInterrupt()))
    with pytest.raises(TypeError):
        park(RecordingS3(TypeError("bug")))
