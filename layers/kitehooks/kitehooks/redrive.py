"""Re-send parked postbacks to the order-updates queue, verifying every checksum on the way.

Run from a machine with AWS credentials for the stack's account::

    python -m kitehooks.redrive --stack kitehooks            # or: make redrive STACK=kitehooks
    python -m kitehooks.redrive --bucket B --queue-url Q --secret-id S [--dry-run]

A parked postback is deleted only after SQS has accepted it. Postbacks go oldest first, so each
order's updates keep their order. One that fails its checksum or is malformed stays where it is
and is listed, for a person to look at; those refused at receipt (``rejected/``) that still fail
are only counted, and expire by the bucket's lifecycle rule.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import boto3

from kitehooks import queue, undelivered
from kitehooks.aws import AWS_CLIENT_CONFIG
from kitehooks.credentials import CredentialsStore, CredentialsUnavailable
from kitehooks.postback import PostbackRejected, parse_postback, verify_postback

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

# Parked bodies were within the function's limit when received; this only bounds a stray object.
MAX_PARKED_BYTES = 1024 * 1024


@dataclass
class RedriveReport:
    sent: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # key -> reason, left in the bucket
    failed: dict[str, str] = field(default_factory=dict)  # key -> why SQS did not take it
    still_rejected: int = 0  # checksum still fails: left to expire by the lifecycle rule

    @property
    def ok(self) -> bool:
        return not self.refused and not self.failed


def redrive(
    s3: S3Client,
    sqs: SQSClient,
    bucket: str,
    queue_url: str,
    api_secret: str,
    dry_run: bool = False,
) -> RedriveReport:
    report = RedriveReport()
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=undelivered.PREFIX)
        for item in page.get("Contents", [])
    ]
    # Oldest first across all folders, so each order's updates reach the queue in order.
    for key in sorted(keys, key=undelivered.received_order):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        try:
            verified = verify_postback(parse_postback(body, MAX_PARKED_BYTES), api_secret)
        except PostbackRejected as rejection:
            if key.startswith(f"{undelivered.PREFIX}rejected/"):
                report.still_rejected += 1
            else:
                report.refused[key] = rejection.reason
            continue
        if not dry_run:
            try:
                queue.publish(sqs, queue_url, verified)
            except queue.QueueUnavailable as error:
                report.failed[key] = str(error)
                continue
            s3.delete_object(Bucket=bucket, Key=key)
        report.sent.append(key)
    return report


def _stack_outputs(stack: str) -> dict[str, str]:
    cloudformation = boto3.client("cloudformation", config=AWS_CLIENT_CONFIG)
    [description] = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    return {output["OutputKey"]: output["OutputValue"] for output in description.get("Outputs", [])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kitehooks.redrive", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", help="read bucket, queue and secret from this stack's outputs")
    parser.add_argument("--bucket")
    parser.add_argument("--queue-url")
    parser.add_argument("--secret-id")
    parser.add_argument("--dry-run", action="store_true", help="verify and list, send nothing")
    args = parser.parse_args(argv)

    bucket, queue_url, secret_id = args.bucket, args.queue_url, args.secret_id
    if args.stack:
        outputs = _stack_outputs(args.stack)
        bucket = bucket or outputs["UndeliveredPostbacksBucketName"]
        queue_url = queue_url or outputs["OrderUpdatesQueueUrl"]
        secret_id = secret_id or outputs["ApiCredentialsSecretArn"]
    if not (bucket and queue_url and secret_id):
        parser.error("give --stack, or all of --bucket, --queue-url and --secret-id")

    try:
        api_secret = CredentialsStore(secret_id, cache_seconds=60).get().api_secret
    except CredentialsUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = redrive(
        boto3.client("s3", config=AWS_CLIENT_CONFIG),
        boto3.client("sqs", config=AWS_CLIENT_CONFIG),
        bucket,
        queue_url,
        api_secret,
        dry_run=args.dry_run,
    )
    verb = "would send" if args.dry_run else "sent"
    print(f"{verb} {len(report.sent)} parked postback(s) to {queue_url}")
    for key, reason in report.refused.items():
        print(f"left in place: s3://{bucket}/{key}: {reason}")
    for key, reason in report.failed.items():
        print(f"not sent, left in place: s3://{bucket}/{key}: {reason}")
    if report.still_rejected:
        print(f"{report.still_rejected} postback(s) whose checksum still fails were left to expire")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
