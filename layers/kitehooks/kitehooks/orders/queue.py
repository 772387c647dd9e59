"""Publishing verified order updates to the SQS FIFO queue, per the message contract.

Body: the postback's raw JSON as received. ``MessageGroupId``: order_id, so each order's updates
stay in order while different orders flow in parallel. ``MessageDeduplicationId``: sha256 of the
order state ``order_id|status|filled_quantity`` (:mod:`kitehooks.orders.states`), so one state is
one message within SQS's five-minute window whichever source carried it and whatever its bytes;
beyond the window the order ledger keeps it once (:mod:`kitehooks.orders.ledger`). A body that
names no state (no status or no filled_quantity) falls back to sha256 of the body. Attribute
``source`` says who sent it: ``postback`` (on receipt), ``redrive`` (parked, sent later by
``make redrive``) or ``reconciler`` (a state Kite's order book shows and no postback delivered).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from kitehooks.aws import error_code
from kitehooks.orders.states import OrderState
from kitehooks.postbacks.postback import VerifiedPostback

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef


Source = Literal["postback", "redrive", "reconciler"]


def deduplication_id(postback: VerifiedPostback) -> str:
    state = postback.state
    if state is not None:
        return state.deduplication_id
    return hashlib.sha256(postback.raw_body.encode("utf-8")).hexdigest()


def message_attributes(
    postback: VerifiedPostback, source: Source = "postback"
) -> dict[str, MessageAttributeValueTypeDef]:
    attributes = {
        "user_id": postback.user_id,
        "order_id": postback.order_id,
        "status": postback.status,
        "source": source,
    }
    # SQS refuses empty attribute values: an attribute Kite did not send is left out.
    return {name: {"DataType": "String", "StringValue": value} for name, value in attributes.items() if value}


class QueueUnavailable(RuntimeError):
    """SQS did not take the message after the client's bounded retries."""


def publish(sqs: SQSClient, queue_url: str, postback: VerifiedPostback, source: Source = "postback") -> str:
    """Send one verified postback; return its SQS MessageId, or raise :class:`QueueUnavailable`."""
    return _send(
        sqs,
        queue_url,
        postback.raw_body,
        postback.order_id,
        deduplication_id(postback),
        message_attributes(postback, source),
    )


def publish_recovered(
    sqs: SQSClient, queue_url: str, state: OrderState, order: Mapping[str, Any], user_id: str
) -> str:
    """Send an order state the reconciler recovered from Kite's order book: body = the order object
    as Kite returned it, the same attributes as a postback's (status as the book says it) with
    ``source=reconciler``, and the state's deduplication id, which a postback of it shares."""
    attributes = {
        "user_id": user_id,
        "order_id": state.order_id,
        "status": str(order.get("status") or state.status),
        "source": "reconciler",
    }
    return _send(
        sqs,
        queue_url,
        json.dumps(order, separators=(",", ":")),
        state.order_id,
        state.deduplication_id,
        {name: {"DataType": "String", "StringValue": value} for name, value in attributes.items() if value},
    )


def _send(
    sqs: SQSClient,
    queue_url: str,
    body: str,
    order_id: str,
    deduplication: str,
    attributes: dict[str, MessageAttributeValueTypeDef],
) -> str:
    try:
        response = sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=body,
            MessageGroupId=order_id,
            MessageDeduplicationId=deduplication,
            MessageAttributes=attributes,
        )
    except (BotoCoreError, ClientError) as error:
        raise QueueUnavailable(
            f"SQS send_message failed ({type(error).__name__}: {error_code(error)})"
        ) from error
    return response["MessageId"]
