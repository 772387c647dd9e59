"""The honest floor for the postback job: the least a handler can do and still be correct in shape.

Parse the JSON body, check Kite's checksum (sha256 of order_id + order_timestamp + api_secret,
compared in constant time), send the raw body to the FIFO queue per the message contract. The
secret is read once per container with boto3. No logging, no metrics, no parking, no deadline:
whatever kitehooks costs above this is the price of those guarantees, and ``make bench`` shows it.

With ``ORDER_LEDGER_TABLE`` set (the function's setting under ``OrderConfirmation=on``) it also
does what the postback path then does after the send: one DynamoDB ``UpdateItem`` of the same
shape (the order's state and claim added to its item), so each mode is compared with a floor that
does the same I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import TYPE_CHECKING, Any

import boto3

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

sqs = boto3.client("sqs")
LEDGER_TABLE = os.environ.get("ORDER_LEDGER_TABLE") or None
dynamodb = boto3.client("dynamodb") if LEDGER_TABLE else None
_api_secret: str | None = None


def _secret() -> str:
    global _api_secret
    if _api_secret is None:
        client = boto3.client("secretsmanager")
        value = client.get_secret_value(SecretId=os.environ["API_CREDENTIALS_SECRET_ID"])
        _api_secret = str(json.loads(value["SecretString"])["api_secret"])
    return _api_secret


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    body: str = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8")
    order = json.loads(body)
    expected = hashlib.sha256((order["order_id"] + order["order_timestamp"] + _secret()).encode()).hexdigest()
    if not hmac.compare_digest(expected.encode(), str(order["checksum"]).lower().encode()):
        return {"statusCode": 403, "body": '{"status":"rejected"}'}
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        name: {"DataType": "String", "StringValue": order[name]}
        for name in ("user_id", "order_id", "status")
        if order.get(name)
    }
    attributes["source"] = {"DataType": "String", "StringValue": "postback"}
    sqs.send_message(
        QueueUrl=os.environ["ORDER_UPDATES_QUEUE_URL"],
        MessageBody=body,
        MessageGroupId=order["order_id"],
        MessageDeduplicationId=hashlib.sha256(body.encode()).hexdigest(),
        MessageAttributes=attributes,
    )
    if dynamodb is not None:
        now = int(time.time())
        state = f"{order['status']}|{order['filled_quantity']}"
        dynamodb.update_item(
            TableName=str(LEDGER_TABLE),
            Key={"pk": {"S": f"orders#{order.get('user_id') or '-'}"}, "sk": {"S": order["order_id"]}},
            UpdateExpression="ADD delivered :delivered, claims :claims SET #day = if_not_exists(#day, :day),"
            " touched_at = if_not_exists(touched_at, :at), expires_at = :expires",
            ExpressionAttributeNames={"#day": "day"},
            ExpressionAttributeValues={
                ":delivered": {"SS": [state]},
                ":claims": {"SS": [f"{state}|{order['order_timestamp']}"]},
                ":day": {"S": time.strftime("%Y-%m-%d", time.gmtime(now + 19800))},  # IST
                ":at": {"N": str(now)},
                ":expires": {"N": str(now + 4 * 86400)},
            },
        )
    return {"statusCode": 200, "body": json.dumps({"status": "queued", "order_id": order["order_id"]})}
