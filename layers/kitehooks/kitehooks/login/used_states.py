"""Single use of login states: the first callback to claim a state wins, every later one loses.

A conditional PutItem is atomic, so two racing callbacks with the same state cannot both pass.
Items carry a TTL attribute so DynamoDB removes them once the state would have expired anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TTL_ATTRIBUTE = "expires_at"


class StateStoreUnavailable(RuntimeError):
    pass


def claim(dynamodb: DynamoDBClient, table: str, state_key: str, expires_at: int) -> bool:
    """True if this is the first use of the state; False if it was used before."""
    try:
        dynamodb.put_item(
            TableName=table,
            Item={"state_key": {"S": state_key}, TTL_ATTRIBUTE: {"N": str(expires_at)}},
            ConditionExpression="attribute_not_exists(state_key)",
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise StateStoreUnavailable(f"could not record the login state ({type(error).__name__})") from None
    except BotoCoreError as error:
        raise StateStoreUnavailable(f"could not record the login state ({type(error).__name__})") from None
    return True
