"""boto3 clients made once per container, with bounded retries and timeouts.

No endpoint is hard-coded: boto3 reads ``AWS_ENDPOINT_URL`` itself, which is how the local
emulator is reached.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

# Standard retry mode backs off and retries throttling and transient faults. botocore's
# ``max_attempts`` counts retries, ``total_max_attempts`` counts attempts: two attempts in all.
# These timeouts bound each socket operation; the wall time of a whole call is bounded by the
# invocation's deadline (``kitehooks.deadline``), since a trickling endpoint never trips them.
AWS_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 2},
    connect_timeout=1,
    read_timeout=3,
)


def error_code(error: Exception) -> str:
    """AWS's error code of a failed call (``AccessDeniedException``), or the exception's kind when
    there was no answer. Safe to log: never the message, which can quote request details."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", type(error).__name__))
    return type(error).__name__


@cache
def sqs_client() -> SQSClient:
    return boto3.client("sqs", config=AWS_CLIENT_CONFIG)


@cache
def s3_client() -> S3Client:
    # Made on first use: the S3 model costs ~100 ms to load and is only needed to park a postback.
    return boto3.client("s3", config=AWS_CLIENT_CONFIG)


@cache
def secretsmanager_client() -> SecretsManagerClient:
    return boto3.client("secretsmanager", config=AWS_CLIENT_CONFIG)


@cache
def dynamodb_client() -> DynamoDBClient:
    return boto3.client("dynamodb", config=AWS_CLIENT_CONFIG)


@cache
def lambda_client() -> LambdaClient:
    # Used by kitehooks.client in users' functions; AWS_ENDPOINT_URL_LAMBDA reaches the local stack.
    return boto3.client("lambda", config=AWS_CLIENT_CONFIG)


if TYPE_CHECKING:
    # No stubs for EventBridge here: typed by the one call kitehooks makes.
    from kitehooks.sessions.events import EventBridgePutEvents


@cache
def events_client() -> EventBridgePutEvents:
    # Made on first use: only the functions that announce session events load the model.
    client: EventBridgePutEvents = boto3.client("events", config=AWS_CLIENT_CONFIG)
    return client
