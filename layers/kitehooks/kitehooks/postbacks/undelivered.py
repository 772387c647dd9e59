"""The undelivered bucket: where a postback goes when it cannot be queued, so it is never lost.

Objects hold the raw body exactly as received. Keys say whether the checksum was verified, so
``kitehooks.postbacks.redrive`` knows what to check again before it re-sends them, and carry the time they
were received, so re-sending keeps each order's updates in the order they arrived.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PREFIX = "undelivered/"
# verified: checksum matched, the queue was down. unverified: could not be checked (credentials
# unavailable, internal error). rejected: checksum did not match (kept in case the api_secret was
# regenerated at Kite before Secrets Manager had the new one; expires by lifecycle rule).
Verification = Literal["verified", "unverified", "rejected"]

# undelivered/<verification>/YYYY/MM/DD/HHMMSS.ffffff-<sha256 of the body>.json, in UTC.
# Microseconds, because Kite sends an order's OPEN and COMPLETE within the same second. The digest
# breaks ties: two bodies parked in the same microsecond by two containers get different keys (a
# counter or nanoseconds could not do that: containers share no counter and their clocks agree
# only to far less than a microsecond), always sort the same way, and the same body parked twice
# is the same update, which the queue's deduplication id (its order state's) would merge anyway.
# Keys written before microseconds were added (``HHMMSS-<sha256>.json``) are still read.
_KEY = re.compile(
    r"(?P<verification>[a-z]+)/(?P<day>\d{4}/\d{2}/\d{2})/(?P<time>\d{6})(?:\.(?P<micro>\d{6}))?"
    r"-(?P<digest>[0-9a-f]{64})\.json"
)


class ParkingFailed(RuntimeError):
    """The postback could not be written to the undelivered bucket either."""


def _bytes(raw_body: str | bytes) -> bytes:
    return raw_body if isinstance(raw_body, bytes) else raw_body.encode("utf-8")


def object_key(raw_body: str | bytes, verification: Verification, received_at: datetime) -> str:
    digest = hashlib.sha256(_bytes(raw_body)).hexdigest()
    stamp = received_at.astimezone(UTC)
    return f"{PREFIX}{verification}/{stamp:%Y/%m/%d/%H%M%S.%f}-{digest}.json"


def park(
    s3: S3Client,
    bucket: str,
    raw_body: str | bytes,
    verification: Verification,
    reason: str,
    order_id: str,
    request_id: str,
    received_at: datetime | None = None,
) -> str:
    """Store the raw postback under the time it was received (not the time it could be parked:
    a call that hung for seconds must not let a later update overtake it); return its key, or
    raise :class:`ParkingFailed`."""
    key = object_key(raw_body, verification, received_at or datetime.now(UTC))
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=_bytes(raw_body),
            ContentType="application/json",
            # S3 metadata travels as HTTP headers: ASCII only, so anything else is percent-encoded.
            Metadata={
                "reason": quote(reason),
                "order-id": quote(order_id[:128]),
                "request-id": quote(request_id[:128]),
            },
        )
    except (BotoCoreError, ClientError) as error:
        raise ParkingFailed(f"S3 put_object failed ({type(error).__name__})") from error
    return key


def _parse_key(key: str) -> tuple[datetime, str] | None:
    """(receive time, digest) of a key written by :func:`park`; ``None`` for any other key.

    A key of the older format, which has whole seconds only, counts as received at the start of
    its second: it was parked before any key with microseconds existed.
    """
    match = _KEY.fullmatch(key.removeprefix(PREFIX))
    if match is None:
        return None
    try:
        stamp = datetime.strptime(
            f"{match['day']} {match['time']}.{match['micro'] or '000000'}", "%Y/%m/%d %H%M%S.%f"
        )
    except ValueError:  # digits that are no date, such as month 13
        return None
    return stamp.replace(tzinfo=UTC), match["digest"]


def received_at(key: str) -> datetime | None:
    """When the object's postback was received, or ``None`` for a key not written by :func:`park`."""
    parsed = _parse_key(key)
    return None if parsed is None else parsed[0]


def received_order(key: str) -> tuple[datetime, str, str]:
    """Sort key: receive time, whatever the verification folder, then the digest (the tie-breaker).

    Objects that are not parked postbacks (no time in the key) go last, by key.
    """
    parsed = _parse_key(key)
    if parsed is None:
        return (datetime.max.replace(tzinfo=UTC), "", key)
    stamp, digest = parsed
    return (stamp, digest, key)
