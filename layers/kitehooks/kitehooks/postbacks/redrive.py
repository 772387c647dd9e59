"""Re-send parked postbacks to the order-updates queue, verifying every checksum on the way.

Run from a machine with AWS credentials for the stack's account::

    python -m kitehooks.postbacks.redrive --stack kitehooks            # or: make redrive STACK=kitehooks
    python -m kitehooks.postbacks.redrive --bucket B --queue-url Q --secret-id S [--ledger-table T]
                                          [--region R] [--dry-run]

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

With the order ledger (``--ledger-table``; with ``--stack``, the stack's ``OrderLedgerTable``),
each parked postback's order state is looked up before it is sent: the reconciler may have
recovered it from Kite's order book meanwhile, and SQS's five-minute deduplication window is long
over. A state already delivered is not sent again: its parked copy is removed and reported as
already delivered. Any other is sent (the deduplication id is the order state's, as for every
source) and recorded as delivered, with its claim for the reconciler to confirm against Kite's
history. When the ledger cannot be reached, redrive still sends, and says so: a duplicate is
tolerable (consumers are idempotent on the order state), a lost update is not.
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

from kitehooks.aws import error_code
from kitehooks.credentials import CredentialsUnavailable, parse_credentials
from kitehooks.deadline import DeadlineExceeded, time_limit
from kitehooks.orders import queue
from kitehooks.orders.ledger import Claim, LedgerUnavailable, OrderLedger
from kitehooks.postbacks import undelivered
from kitehooks.postbacks.postback import PostbackRejected, parse_postback, verify_postback

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from kitehooks.postbacks.postback import VerifiedPostback

DEFAULT_REGION = "ap-south-1"  # Kite's servers are in Mumbai; so is the stack by default
# Parked bodies were within the function's limit when received; this only bounds a stray object.
MAX_PARKED_BYTES = 1024 * 1024
# A person is waiting, not API Gateway: a little more patience than the functions have, but an
# endpoint that is down still fails within seconds.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=20)
# The ledger only spares a duplicate: it gets a short wait, and the whole of each call is bounded
# (a trickling endpoint trips no read timeout), so an unreachable ledger delays the run by seconds.
LEDGER_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=2, read_timeout=3
)
LEDGER_CALL_SECONDS = 10.0
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
    # The ledger says its state is on the queue already (the reconciler recovered it): not sent,
    # removed from the bucket (left there on a dry run).
    already_delivered: list[str] = field(default_factory=list)
    # Why the ledger could not be read or written, once it failed: from then on every postback is
    # sent unchecked (a possible duplicate, never a loss) and nothing more is recorded.
    ledger_unavailable: str | None = None
    unchecked: list[str] = field(default_factory=list)  # sent without asking the ledger
    unrecorded: list[str] = field(default_factory=list)  # sent, but not recorded in the ledger
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


class _LedgerOnce:
    """The ledger as one redrive run uses it: each call bounded; after the first failure it is
    not asked again, so an unreachable ledger costs the run one wait, not one per postback."""

    def __init__(self, ledger: OrderLedger | None, report: RedriveReport) -> None:
        self._ledger = ledger
        self._report = report

    def _failed(self, error: LedgerUnavailable | DeadlineExceeded) -> None:
        self._report.ledger_unavailable = str(error) or "DynamoDB did not answer in time"
        self._ledger = None

    def already_delivered(self, verified: VerifiedPostback) -> bool | None:
        """Whether the postback's state is on the queue already; None when nobody can say."""
        state = verified.state
        if self._ledger is None or state is None:
            return None
        try:
            with time_limit(LEDGER_CALL_SECONDS):
                return state.key in self._ledger.delivered(verified.user_id, verified.order_id)
        except (LedgerUnavailable, DeadlineExceeded) as error:
            self._failed(error)
            return None

    def record(self, verified: VerifiedPostback) -> bool:
        """Record a sent postback's state and its claim, as the postback path would have."""
        state = verified.state
        if state is None:
            return True  # no order state: nothing for the ledger to know
        if self._ledger is None:
            return False
        claim = Claim(state.status, state.filled_quantity, verified.order_timestamp)
        try:
            with time_limit(LEDGER_CALL_SECONDS):
                self._ledger.record_delivered(verified.user_id, verified.order_id, [state], [claim])
        except (LedgerUnavailable, DeadlineExceeded) as error:
            self._failed(error)
            return False
        return True


def redrive(
    s3: S3Client,
    sqs: SQSClient,
    bucket: str,
    queue_url: str,
    api_secret: str,
    dry_run: bool = False,
    ledger: OrderLedger | None = None,
) -> RedriveReport:
    """Send the parked postbacks; with ``ledger``, skip (and remove) those whose state the queue
    has had already, and record the others as delivered."""
    report = RedriveReport()
    checked = _LedgerOnce(ledger, report)
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
        delivered = checked.already_delivered(verified)
        if delivered:
            report.already_delivered.append(key)
            if not dry_run and not _delete(s3, bucket, key, report):
                return report
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
        if delivered is None and report.ledger_unavailable is not None:
            report.unchecked.append(key)
        if ledger is not None and not checked.record(verified):
            report.unrecorded.append(key)
        if not _delete(s3, bucket, key, report):
            return report
    return report


def _delete(s3: S3Client, bucket: str, key: str, report: RedriveReport) -> bool:
    """Remove a parked postback that the queue has; False (and the run stopped) if S3 refuses."""
    try:
        s3.delete_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as error:
        # Sent but still parked: the next run sends it again. Stopping now keeps that
        # duplicate ahead of the order's later updates instead of after them.
        report.stopped = describe_failure(error, f"deleting s3://{bucket}/{key}, which the queue has")
        return False
    return True


@dataclass(frozen=True, slots=True)
class Target:
    bucket: str
    queue_url: str
    secret_id: str
    ledger_table: str | None = None  # None: no ledger to check (a stack from before it, or none named)


_STACK_OUTPUTS = {
    "bucket": "UndeliveredPostbacksBucketName",
    "queue_url": "OrderUpdatesQueueUrl",
    "secret_id": "ApiCredentialsSecretArn",
}
# The ledger table: this output when the stack has it, else the stack's resource of this logical id.
_LEDGER_OUTPUT = "OrderLedgerTableName"
_LEDGER_RESOURCE = "OrderLedgerTable"


def region_name(explicit: str | None) -> str:
    """``--region``, else AWS_REGION, else boto3's own setting, else ap-south-1."""
    return explicit or os.environ.get("AWS_REGION") or boto3.Session().region_name or DEFAULT_REGION


def resolve_target(session: boto3.Session, args: argparse.Namespace) -> Target:
    given = {"bucket": args.bucket, "queue_url": args.queue_url, "secret_id": args.secret_id}
    ledger_table: str | None = args.ledger_table
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
        if not ledger_table:
            ledger_table = outputs.get(_LEDGER_OUTPUT) or _ledger_resource(cloudformation, args.stack, what)
    return Target(
        bucket=given["bucket"],
        queue_url=given["queue_url"],
        secret_id=given["secret_id"],
        ledger_table=ledger_table or None,
    )


def _ledger_resource(cloudformation: CloudFormationClient, stack: str, what: str) -> str | None:
    """The stack's order ledger table, or None for a stack deployed before it existed."""
    try:
        resource = cloudformation.describe_stack_resource(StackName=stack, LogicalResourceId=_LEDGER_RESOURCE)
    except ClientError as error:
        # CloudFormation says ValidationError, "Resource OrderLedgerTable does not exist for stack X".
        if "does not exist" in str(error.response.get("Error", {}).get("Message", "")):
            return None
        raise RedriveError(describe_failure(error, what)) from None
    except BotoCoreError as error:
        raise RedriveError(describe_failure(error, what)) from None
    return resource["StackResourceDetail"].get("PhysicalResourceId") or None


def open_ledger(session: boto3.Session, table: str) -> tuple[OrderLedger | None, str | None]:
    """The order ledger, or None and why it cannot be used now. A table that does not exist is a
    mistake to fix before anything is sent; one that does not answer is not worth holding parked
    updates back for (a duplicate is tolerable, a lost update is not)."""
    try:
        dynamodb = session.client("dynamodb", config=LEDGER_CLIENT_CONFIG)
        with time_limit(LEDGER_CALL_SECONDS):
            dynamodb.describe_table(TableName=table)
    except DeadlineExceeded:
        return None, "DynamoDB did not answer in time"
    except ClientError as error:
        if error_code(error) in _NOT_FOUND:
            raise RedriveError(
                f"order ledger table {table} does not exist in {session.region_name}"
            ) from None
        return None, f"DynamoDB DescribeTable failed ({error_code(error)})"
    except BotoCoreError as error:
        return None, f"DynamoDB DescribeTable failed ({error_code(error)})"
    return OrderLedger(dynamodb, table), None


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
    ledger, unreachable = open_ledger(session, target.ledger_table) if target.ledger_table else (None, None)
    report = redrive(s3, sqs, target.bucket, target.queue_url, api_secret, args.dry_run, ledger)
    report.ledger_unavailable = report.ledger_unavailable or unreachable

    verb = "would send" if args.dry_run else "sent"
    print(f"{verb} {len(report.sent)} parked postback(s) to {target.queue_url}")
    if report.already_delivered:
        removed = "would remove" if args.dry_run else "removed"
        print(
            f"{len(report.already_delivered)} parked postback(s) already delivered (the order ledger "
            f"has their order state): not sent, {removed}"
        )
    for key in report.already_delivered:
        print(f"already delivered: s3://{target.bucket}/{key}")
    if not target.ledger_table:
        print("no order ledger given (--ledger-table): sent without checking what the queue already had")
    elif report.ledger_unavailable:
        # Opened but failed mid-run: only what came after the failure went unchecked/unrecorded.
        unchecked = len(report.sent) if ledger is None else len(report.unchecked)
        unrecorded = len(report.sent) if ledger is None else len(report.unrecorded)
        print(
            f"warning: order ledger {target.ledger_table} unreachable ({report.ledger_unavailable}): "
            f"{unchecked} parked postback(s) {verb} without checking it, so an order state the queue "
            "already had may arrive twice (consumers are idempotent on the order state)"
        )
        if unrecorded and not args.dry_run:
            print(f"warning: {unrecorded} sent postback(s) not recorded in the order ledger")
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
    parser.add_argument(
        "--ledger-table",
        help="the order ledger table: parked states the queue already has are not sent again "
        "(default with --stack: the stack's OrderLedgerTable)",
    )
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
