"""Create the template's queues, buckets, tables and secrets in an AWS emulator (moto server).

What the template declares is what gets made: names derive from the stack name and logical id,
attributes from the resource's properties, so local runs and tests exercise the template itself.
Returns the values that ``!Ref`` and ``!GetAtt`` resolve to, keyed by logical id.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3

from local.gateway import load_template

ResourceValues = dict[str, dict[str, str]]


def follow_awscurrent_in_emulator() -> None:
    """Make an in-process moto server serve the version AWSCURRENT is on, as AWS does.

    moto 5.2's UpdateSecretVersionStage moves the AWSCURRENT label but GetSecretValue keeps
    answering the version it last made current itself, so a session written by compare-and-swap
    (``kitehooks.sessions.store.SessionStore.replace``) would not be read back, and the next plain put
    would leave AWSCURRENT on two versions. The refusal when AWSCURRENT has moved (the part the
    compare-and-swap relies on) is moto's own and is not touched. Idempotent.
    """
    from moto.secretsmanager.models import FakeSecret, SecretsManagerBackend

    original = SecretsManagerBackend.update_secret_version_stage
    if getattr(original, "follows_awscurrent", False):
        return

    def update_secret_version_stage(
        self: SecretsManagerBackend,
        secret_id: str,
        version_stage: str,
        remove_from_version_id: str,
        move_to_version_id: str,
    ) -> tuple[str, str]:
        answer = original(self, secret_id, version_stage, remove_from_version_id, move_to_version_id)
        secret = self.secrets[secret_id]  # by name or ARN, as moto's own call looked it up
        if version_stage == "AWSCURRENT" and move_to_version_id and isinstance(secret, FakeSecret):
            secret.set_default_version_id(move_to_version_id)
        return answer

    update_secret_version_stage.follows_awscurrent = True  # type: ignore[attr-defined]
    SecretsManagerBackend.update_secret_version_stage = update_secret_version_stage  # type: ignore[method-assign]


# The tests and benchmarks run moto in this process (ThreadedMotoServer) and import this module.
follow_awscurrent_in_emulator()

# CloudFormation property -> SQS attribute; values are sent as strings.
_QUEUE_ATTRIBUTES = {
    "FifoQueue": "FifoQueue",
    "ContentBasedDeduplication": "ContentBasedDeduplication",
    "DeduplicationScope": "DeduplicationScope",
    "FifoThroughputLimit": "FifoThroughputLimit",
    "MessageRetentionPeriod": "MessageRetentionPeriod",
    "VisibilityTimeout": "VisibilityTimeout",
    "SqsManagedSseEnabled": "SqsManagedSseEnabled",
    "DelaySeconds": "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
}


def _attribute_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _resolve(value: Any, created: ResourceValues) -> Any:
    """Resolve the few intrinsics a queue's properties use (GetAtt/Ref to resources made earlier)."""
    if isinstance(value, Mapping):
        if "Fn::GetAtt" in value:
            logical_id, attribute = value["Fn::GetAtt"]
            return created[logical_id][attribute]
        if "Ref" in value:
            return created[value["Ref"]]["Ref"]
        return {key: _resolve(item, created) for key, item in value.items()}
    return value


def provision(
    template_path: Path,
    stack_name: str,
    region: str = "ap-south-1",
    secret_values: Mapping[str, str] | None = None,
    endpoint_url: str | None = None,
) -> ResourceValues:
    """Create every SQS queue, S3 bucket and Secrets Manager secret the template declares.

    ``secret_values`` replaces a secret's template value (e.g. real local credentials instead of the
    placeholder). Queues are created dead-letter targets first, so redrive policies resolve.
    ``endpoint_url`` names the emulator; without it boto3's own settings (AWS_ENDPOINT_URL) apply.
    """
    resources = load_template(template_path)["Resources"]
    created: ResourceValues = {}
    # Typed as Any: the values come from the template as plain dicts, not boto3's TypedDicts.
    sqs: Any = boto3.client("sqs", region_name=region, endpoint_url=endpoint_url)
    s3: Any = boto3.client("s3", region_name=region, endpoint_url=endpoint_url)
    secrets: Any = boto3.client("secretsmanager", region_name=region, endpoint_url=endpoint_url)
    dynamodb: Any = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint_url)

    queues = {lid: r for lid, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    ordered = sorted(queues, key=lambda lid: "RedrivePolicy" in queues[lid].get("Properties", {}))
    for logical_id in ordered:
        properties = queues[logical_id].get("Properties", {})
        fifo = bool(properties.get("FifoQueue"))
        name = f"{stack_name}-{logical_id}" + (".fifo" if fifo else "")
        attributes = {
            attribute: _attribute_value(properties[prop])
            for prop, attribute in _QUEUE_ATTRIBUTES.items()
            if prop in properties
        }
        if "RedrivePolicy" in properties:
            attributes["RedrivePolicy"] = json.dumps(_resolve(properties["RedrivePolicy"], created))
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        created[logical_id] = {"Ref": url, "Arn": arn, "QueueName": name, "QueueUrl": url}

    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::S3::Bucket":
            continue
        name = f"{stack_name}-{logical_id}".lower()[:63]
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        properties = resource.get("Properties", {})
        if "BucketEncryption" in properties:
            # CloudFormation says ServerSideEncryptionByDefault where the S3 API says Apply...
            rules = [
                {"ApplyServerSideEncryptionByDefault": dict(rule["ServerSideEncryptionByDefault"])}
                for rule in properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            ]
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in properties:
            s3.put_public_access_block(
                Bucket=name,
                PublicAccessBlockConfiguration=dict(properties["PublicAccessBlockConfiguration"]),
            )
        if "VersioningConfiguration" in properties:
            s3.put_bucket_versioning(
                Bucket=name,
                VersioningConfiguration={"Status": properties["VersioningConfiguration"]["Status"]},
            )
        created[logical_id] = {
            "Ref": name,
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
        }

    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::SecretsManager::Secret":
            continue
        properties = resource.get("Properties", {})
        value = (secret_values or {}).get(logical_id, properties.get("SecretString", ""))
        name = f"{stack_name}/{logical_id}"
        arn = secrets.create_secret(Name=name, SecretString=value)["ARN"]
        created[logical_id] = {"Ref": arn, "Id": arn, "Name": name}

    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        properties = resource.get("Properties", {})
        name = f"{stack_name}-{logical_id}"
        table: dict[str, Any] = {
            "TableName": name,
            "KeySchema": [dict(key) for key in properties["KeySchema"]],
            "AttributeDefinitions": [dict(attribute) for attribute in properties["AttributeDefinitions"]],
            "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if "GlobalSecondaryIndexes" in properties:
            table["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": index["IndexName"],
                    "KeySchema": [dict(key) for key in index["KeySchema"]],
                    "Projection": dict(index["Projection"]),
                }
                for index in properties["GlobalSecondaryIndexes"]
            ]
        arn = dynamodb.create_table(**table)["TableDescription"]["TableArn"]
        if "TimeToLiveSpecification" in properties:
            dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification=dict(properties["TimeToLiveSpecification"])
            )
        created[logical_id] = {"Ref": name, "Arn": arn}

    return created


def serve_emulator(argv: list[str] | None = None) -> None:
    """``moto_server`` with :func:`follow_awscurrent_in_emulator` applied (same arguments, e.g.
    ``-H 127.0.0.1 -p 5000``): the emulator a local stack should run, so sessions changed by
    compare-and-swap read back as on AWS."""
    from moto.server import main as moto_server

    follow_awscurrent_in_emulator()
    moto_server(argv)


if __name__ == "__main__":
    serve_emulator(sys.argv[1:])
