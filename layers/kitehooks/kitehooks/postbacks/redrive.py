"""Re-send parked postbacks to the order-updates queue, verifying every checksum on the way.

Run from a machine with AWS credentials for the stack's account::

    python -m kitehooks.postbacks.redrive --stack kitehooks            # or: make redrive STACK=kitehooks
    python -m kitehooks.postbacks.redrive --bucket B --queue-url Q --secret-id S [--region R] [--dry-run]

The region is ``--region``, else ``AWS_REGION``, else boto3's own (``AWS_DEFAULT_REGION``, the
profile), else ap-south-1. boto3 reads ``AWS_ENDPOINT_URL`` itself, which is how the local stack
is reached. What stops the run before anything is sent (no credentials, a bad region, a stack,
bucket, queue or secret that does not exist, an endpoint that does not answer) is one line on
stderr and exit code 2.

Postbacks go in the order they were received, across the verification folders, so each order's
updates reach the queue in the order they reached kitehooks; each carries ``source=redrive``.
A parked postback is deleted only after SQS has accepted it. One that fails its checksum or is
malformed stays where it is and is listed, for a person to look at; those refused at receipt
(``rejected/``) that still fail are only counted, and expire by the bucket's lifecycle rule.
If SQS does not take an update, the order's later updates stay parked too, so that none
overtakes it; if S3 fails, the run stops where it is, for the same reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    InvalidRegionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from kitehooks.credentials import CredentialsUnavailable, parse_credentials
from kitehooks.orders import queue
from kitehooks.postbacks import undelivered
from kitehooks.postbacks.postback import PostbackRejected, parse_postback, verify_postback

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

DEFAULT_REGION = "ap-south-1"  # Kite's servers are in Mumbai; so is the stack by default
# Parked bodies were within the function's limit when received; this only bounds a stray object.
MAX_PARKED_BYTES = 1024 * 1024
# A person is waiting, not API Gateway: a little more patience than the functions have, but an
# endpoint that is down still fails within seconds.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=20)
# Error codes that mean "no such resource", by service and protocol.
_NOT_FOUND = {
    "NoSuchBucket",
    "404",
    "NotFound",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "ResourceNotFoundException",
}


class RedriveError(Exception):
    """Why the redrive cannot go on, in one line for the person who ran it."""


@dataclass
class RedriveReport:
    sent: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # key -> reason, left in the bucket
    failed: dict[str, str] = field(default_factory=dict)  # key -> why SQS did not take it
    held: dict[str, str] = field(default_factory=dict)  # key -> the earlier update that was not sent
    still_rejected: int = 0  # checksum still fails: left to expire by the lifecycle rule
    stopped: str | None = None  # S3 failed mid-run: nothing after this point was tried

    @property
    def ok(self) -> bool:
        return not (self.refused or self.failed or self.held or self.stopped)


def describe_failure(error: Exception, what: str, region: str | None = None) -> str:
    """One line saying what went wrong with ``what`` (a bucket, queue, secret, stack or object)."""
    if isinstance(error, InvalidRegionError):
        return f"invalid region {error.kwargs.get('region_name')!r}: give --region as e.g. {DEFAULT_REGION}"
    if isinstance(error, NoCredentialsError):
        return (
            "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(any values for the local stack)"
        )
    if isinstance(error, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        hint = (
            "is the local stack running (make dev)?"
            if os.environ.get("AWS_ENDPOINT_URL")
            else "check the region and the network"
        )
        return f"cannot reach {error.kwargs.get('endpoint_url', 'AWS')} ({what}): {hint}"
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", "unknown"))
        if code in _NOT_FOUND:
            return f"{what} does not exist" + (f" in {region}" if region else "")
        message = str(details.get("Message") or "").splitlines()[:1]
        return f"{what}: {code}" + (f": {message[0]}" if message else "")
    first_line = (str(error).splitlines() or [type(error).__name__])[0]
    return f"{what}: {first_line}"


def redrive(
    s3: S3Client,
    sqs: SQSClient,
    bucket: str,
    queue_url: str,
    api_secret: str,
    dry_run: bool = False,
) -> RedriveReport:
    report = RedriveReport()
    try:
        keys = [
            item["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=undelivered.PREFIX)
            for item in page.get("Contents", [])
        ]
    except (BotoCoreError, ClientError) as error:
        raise RedriveError(describe_failure(error, f"bucket {bucket}")) from None
    unsent: set[str] = set()  # orders with an update SQS did not take: the rest of each waits
    # In receive order across all folders, so each order's updates reach the queue in order.
    for key in sorted(keys, key=undelivered.received_order):
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (BotoCoreError, ClientError) as error:
            # Its order is unknown, so any later key could be a newer update of it: stop here.
            report.stopped = describe_failure(error, f"s3://{bucket}/{key}")
            return report
        try:
            verified = verify_postback(parse_postback(body, MAX_PARKED_BYTES), api_secret)
        except PostbackRejected as rejection:
            if key.startswith(f"{undelivered.PREFIX}rejected/"):
                report.still_rejected += 1
            else:
                report.refused[key] = rejection.reason
            continue
        if verified.order_id in unsent:
            report.held[key] = f"an earlier update of order {verified.order_id} was not sent"
            continue
        if dry_run:
            report.sent.append(key)
            continue
        try:
            queue.publish(sqs, queue_url, verified, source="redrive")
        except queue.QueueUnavailable as error:
            report.failed[key] = str(error)
            unsent.add(verified.order_id)
            continue
        report.sent.append(key)
        try:
            s3.delete_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError) as error:
            # Sent but still parked: the next run sends it again. Stopping now keeps that
            # duplicate ahead of the order's later updates instead of after them.
            report.stopped = describe_failure(error, f"deleting sent s3://{bucket}/{key}")
            return report
    return report


@dataclass(frozen=True, slots=True)
class Target:
    bucket: str
    queue_url: str
    secret_id: str


_STACK_OUTPUTS = {
    "bucket": "UndeliveredPostbacksBucketName",
    "queue_url": "OrderUpdatesQueueUrl",
    "secret_id": "ApiCredentialsSecretArn",
}


def region_name(explicit: str | None) -> str:
    """``--region``, else AWS_REGION, else boto3's own setting, else ap-south-1."""
    return explicit or os.environ.get("AWS_REGION") or boto3.Session().region_name or DEFAULT_REGION


def resolve_target(session: boto3.Session, args: argparse.Namespace) -> Target:
    given = {"bucket": args.bucket, "queue_url": args.queue_url, "secret_id": args.secret_id}
    if args.stack:
        cloudformation = session.client("cloudformation", config=CLIENT_CONFIG)
        what = f"stack {args.stack} in {session.region_name}"
        try:
            [description] = cloudformation.describe_stacks(StackName=args.stack)["Stacks"]
        except ClientError as error:
            # CloudFormation says ValidationError, "Stack with id X does not exist".
            if "does not exist" in str(error.response.get("Error", {}).get("Message", "")):
                raise RedriveError(f"{what} does not exist") from None
            raise RedriveError(describe_failure(error, what)) from None
        except BotoCoreError as error:
            raise RedriveError(describe_failure(error, what)) from None
        outputs = {output["OutputKey"]: output["OutputValue"] for output in description.get("Outputs", [])}
        missing = [name for arg, name in _STACK_OUTPUTS.items() if not given[arg] and name not in outputs]
        if missing:
            raise RedriveError(
                f"{what} has no output {', '.join(missing)}: is it a kitehooks stack, fully deployed?"
            )
        given = {arg: given[arg] or outputs[name] for arg, name in _STACK_OUTPUTS.items()}
    return Target(bucket=given["bucket"], queue_url=given["queue_url"], secret_id=given["secret_id"])


def check_target(session: boto3.Session, s3: S3Client, sqs: SQSClient, target: Target) -> str:
    """Check that the bucket and the FIFO queue exist; return the app's api_secret."""
    try:
        s3.head_bucket(Bucket=target.bucket)
    except (BotoCoreError, ClientError) as error:
        raise RedriveError(describe_failure(error, f"bucket {target.bucket}", session.region_name)) from None
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=target.queue_url, AttributeNames=["FifoQueue"])
    except (BotoCoreError, ClientError) as error:
        raise RedriveError(
            describe_failure(error, f"queue {target.queue_url}", session.region_name)
        ) from None
    if attributes.get("Attributes", {}).get("FifoQueue") != "true":
        raise RedriveError(f"queue {target.queue_url} is not a FIFO queue: give the order-updates queue")

    secrets = session.client("secretsmanager", config=CLIENT_CONFIG)
    try:
        secret_string = secrets.get_secret_value(SecretId=target.secret_id).get("SecretString", "")
    except (BotoCoreError, ClientError) as error:
        raise RedriveError(
            describe_failure(error, f"secret {target.secret_id}", session.region_name)
        ) from None
    try:
        # The same rules as the functions apply (placeholder refused); never echo the value.
        return parse_credentials(json.loads(secret_string)).api_secret
    except ValueError:
        raise RedriveError(
            f'secret {target.secret_id} is not JSON {{"api_key": ..., "api_secret": ...}}'
        ) from None
    except CredentialsUnavailable as error:
        raise RedriveError(str(error)) from None


def run(args: argparse.Namespace) -> int:
    if not (args.stack or (args.bucket and args.queue_url and args.secret_id)):
        raise RedriveError("give --stack, or all of --bucket, --queue-url and --secret-id")
    try:
        session = boto3.Session(region_name=region_name(args.region))
        s3 = session.client("s3", config=CLIENT_CONFIG)
        sqs = session.client("sqs", config=CLIENT_CONFIG)
    except BotoCoreError as error:  # an invalid region name, an unknown AWS_PROFILE
        raise RedriveError(describe_failure(error, "AWS configuration")) from None
    except ValueError as error:  # botocore's "Invalid endpoint: ..." (AWS_ENDPOINT_URL without a scheme)
        raise RedriveError(
            f"AWS configuration: {error} (an endpoint URL needs http:// or https://)"
        ) from None
    try:
        has_credentials = session.get_credentials() is not None
    except BotoCoreError as error:  # e.g. an SSO token that expired
        raise RedriveError(describe_failure(error, "AWS credentials")) from None
    if not has_credentials:
        raise RedriveError(describe_failure(NoCredentialsError(), "AWS credentials"))

    target = resolve_target(session, args)
    api_secret = check_target(session, s3, sqs, target)
    report = redrive(s3, sqs, target.bucket, target.queue_url, api_secret, dry_run=args.dry_run)

    verb = "would send" if args.dry_run else "sent"
    print(f"{verb} {len(report.sent)} parked postback(s) to {target.queue_url}")
    for key, reason in report.refused.items():
        print(f"left in place: s3://{target.bucket}/{key}: {reason}")
    for key, reason in report.failed.items():
        print(f"not sent, left in place: s3://{target.bucket}/{key}: {reason}")
    for key, reason in report.held.items():
        print(f"held back, left in place: s3://{target.bucket}/{key}: {reason}")
    if report.still_rejected:
        print(f"{report.still_rejected} postback(s) whose checksum still fails were left to expire")
    if report.stopped:
        raise RedriveError(f"stopped: {report.stopped}; run again to send the rest in order")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kitehooks.postbacks.redrive", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", help="read bucket, queue and secret from this stack's outputs")
    parser.add_argument("--bucket", help="the undelivered-postbacks bucket")
    parser.add_argument("--queue-url", help="the order-updates FIFO queue")
    parser.add_argument("--secret-id", help="the API credentials secret (name or ARN)")
    parser.add_argument("--region", help=f"default: AWS_REGION, AWS_DEFAULT_REGION, else {DEFAULT_REGION}")
    parser.add_argument("--dry-run", action="store_true", help="verify and list, send nothing")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except RedriveError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
