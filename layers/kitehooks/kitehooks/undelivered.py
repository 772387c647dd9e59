"""The undelivered bucket: where a postback goes when it cannot be queued, so it is never lost.

Objects hold the raw body exactly as received. Keys say whether the checksum was verified, so
``kitehooks.redrive`` knows what to check again before it re-sends them, and sort by the time
they were received, so re-sending keeps each order's updates in order.
"""

from __future__ import annotations

import hashlib
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


class ParkingFailed(RuntimeError):
    """The postback could not be written to the undelivered bucket either."""


def _bytes(raw_body: str | bytes) -> bytes:
    return raw_body if isinstance(raw_body, bytes) else raw_body.encode("utf-8")


def object_key(raw_body: str | bytes, verification: Verification, received_at: datetime) -> str:
    digest = hashlib.sha256(_bytes(raw_body)).hexdigest()
    stamp = received_at.astimezone(UTC)
    return f"{PREFIX}{verification}/{stamp:%Y/%m/%d/%H%M%S}-{digest}.json"


def park(
    s3: S3Client,
    bucket: str,
    raw_body: str | bytes,
    verification: Verification,
    reason: str,
    order_id: str,
    request_id: str,
) -> str:
    """Store the raw postback; return its key, or raise :class:`ParkingFailed`."""
    key = object_key(raw_body, verification, datetime.now(UTC))
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


def received_order(key: str) -> str:
    """Sort key: the time part of the object key, whatever its verification folder."""
    return key.removeprefix(PREFIX).partition("/")[2]
