"""The example consumer in template.yaml: deployed only with ExampleConsumer=on, least privilege,
wired to the FIFO queue for partial batch failures, and its table and timeouts matching the code
and the queue."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from cfnlint.decode import cfn_yaml

from tests.conftest import load_function, reset_layer_caches

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE: dict[str, Any] = cfn_yaml.load(str(ROOT / "template.yaml"))
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
CONSUMER_RESOURCES = {
    "ConsumerFunction",
    "ConsumerFunctionRole",
    "ConsumerIdempotencyTable",
    "ConsumerFunctionLogs",
    "ConsumerErrorsAlarm",
}


def references(value: Any) -> set[str]:
    """Every resource or parameter a value names through Ref, GetAtt or Sub."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(item[0] if isinstance(item, list) else str(item).split(".")[0])
            elif key == "Fn::Sub":
                text = item[0] if isinstance(item, list) else item
                found.update(name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text))
            found |= references(item)
    elif isinstance(value, list):
        for item in value:
            found |= references(item)
    return found


def test_the_example_consumer_is_off_by_default_and_deployed_only_when_on() -> None:
    parameter = TEMPLATE["Parameters"]["ExampleConsumer"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("off", ["on", "off"])
    # Why off: the queue's messages go to one reader.
    assert "your own systems read the" in parameter["Description"]
    assert TEMPLATE["Conditions"]["HasExampleConsumer"] == {"Fn::Equals": [{"Ref": "ExampleConsumer"}, "on"]}
    conditioned = {
        lid
        for lid, r in RESOURCES.items()
        if r.get("Condition") in ("HasExampleConsumer", "HasExampleConsumerAlarm")
    }
    assert conditioned == CONSUMER_RESOURCES
    # Its alarm only with an e-mail to send it to, like every other alarm.
    assert TEMPLATE["Conditions"]["HasExampleConsumerAlarm"] == {
        "Fn::And": [{"Condition": "HasAlarmEmail"}, {"Condition": "HasExampleConsumer"}]
    }


def test_nothing_deployed_without_the_consumer_names_its_resources() -> None:
    # A Ref to a resource whose condition is false fails the whole stack.
    for logical_id, resource in RESOURCES.items():
        if resource.get("Condition") in ("HasExampleConsumer", "HasExampleConsumerAlarm"):
            continue
        named = references(resource.get("Properties", {})) & CONSUMER_RESOURCES
        assert not named, f"{logical_id} names {named}"
    for name, output in TEMPLATE.get("Outputs", {}).items():
        if output.get("Condition") != "HasExampleConsumer":
            assert not references(output["Value"]) & CONSUMER_RESOURCES, name


def test_the_consumer_reads_the_order_updates_queue_in_batches_reporting_each_failure() -> None:
    properties = RESOURCES["ConsumerFunction"]["Properties"]
    assert properties["CodeUri"] == "functions/consumer/"
    assert "Handler" not in properties  # app.handler, from Globals, with the shared layer
    assert properties["Environment"]["Variables"] == {
        "IDEMPOTENCY_TABLE": {"Ref": "ConsumerIdempotencyTable"}
    }
    [event] = properties["Events"].values()
    assert event == {
        "Type": "SQS",
        "Properties": {
            "Queue": {"Fn::GetAtt": ["OrderUpdatesQueue", "Arn"]},
            "BatchSize": 10,  # the most a FIFO queue hands Lambda at once
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    }


def test_the_consumer_role_grants_only_this_queue_and_its_own_table() -> None:
    assert RESOURCES["ConsumerFunction"]["Properties"]["Role"] == {
        "Fn::GetAtt": ["ConsumerFunctionRole", "Arn"]
    }
    role = RESOURCES["ConsumerFunctionRole"]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust == {
        "Effect": "Allow",
        "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }
    # The two every SAM-made role here gets (logs; traces for Tracing: Active), nothing broader.
    assert role["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"},
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXrayWriteOnlyAccess"},
    ]
    grants = {
        (action, json.dumps(statement["Resource"]))
        for policy in role["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Allow"
        for action in statement["Action"]
    }
    queue = json.dumps({"Fn::GetAtt": ["OrderUpdatesQueue", "Arn"]})
    table = json.dumps({"Fn::GetAtt": ["ConsumerIdempotencyTable", "Arn"]})
    assert grants == {
        # What Lambda's event source mapping needs to read one queue: no send, no other queue.
        ("sqs:ReceiveMessage", queue),
        ("sqs:DeleteMessage", queue),
        ("sqs:GetQueueAttributes", queue),
        # Powertools Idempotency's own calls on its table: no Scan or Query, no other table.
        ("dynamodb:GetItem", table),
        ("dynamodb:PutItem", table),
        ("dynamodb:UpdateItem", table),
        ("dynamodb:DeleteItem", table),
    }


def translated() -> dict[str, Any]:
    """The template as SAM turns it into CloudFormation (no AWS call)."""
    from samtranslator.parser.parser import Parser  # type: ignore[import-untyped]
    from samtranslator.translator.translator import Translator  # type: ignore[import-untyped]

    template = json.loads(json.dumps(TEMPLATE))
    for resource in template["Resources"].values():
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = "s3://bucket/key"

    def no_managed_policies() -> dict[str, str]:
        raise AssertionError("the template names a managed policy")

    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name="ap-south-1"))
    result: dict[str, Any] = translator.translate(
        template, parameter_values={}, get_managed_policy_map=no_managed_policies
    )
    return result


def test_sam_adds_no_role_that_reads_every_queue() -> None:
    resources = translated()["Resources"]
    [mapping] = [r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert mapping["Condition"] == "HasExampleConsumer"
    assert mapping["Properties"]["FunctionName"] == {"Ref": "ConsumerFunction"}
    assert mapping["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["OrderUpdatesQueue", "Arn"]}
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert resources["ConsumerFunction"]["Properties"]["Role"] == {
        "Fn::GetAtt": ["ConsumerFunctionRole", "Arn"]
    }
    # The managed policy SAM adds to its own role for an SQS event reads and deletes on "*".
    assert "ConsumerFunctionRole" in resources
    assert not [
        lid
        for lid, r in resources.items()
        if r["Type"] == "AWS::IAM::Role"
        and "AWSLambdaSQSQueueExecutionRole" in json.dumps(r["Properties"].get("ManagedPolicyArns", []))
    ]


def test_the_queue_outlasts_the_consumers_timeout_and_dead_letters_after_five_receives() -> None:
    queue = RESOURCES["OrderUpdatesQueue"]["Properties"]
    timeout = RESOURCES["ConsumerFunction"]["Properties"]["Timeout"]
    # Lambda refuses the mapping when the timeout exceeds the visibility timeout; AWS advises 6x.
    assert 6 * timeout <= queue["VisibilityTimeout"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["OrderUpdatesDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    # What the alarms tell whoever gets them agrees with the queue.
    assert "five times" in RESOURCES["DeadLetterAlarm"]["Properties"]["AlarmDescription"]
    assert "five receives" in RESOURCES["ConsumerErrorsAlarm"]["Properties"]["AlarmDescription"]


def test_the_consumer_errors_alarm_watches_the_consumer_and_exists_only_with_an_email() -> None:
    alarm = RESOURCES["ConsumerErrorsAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors")
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "ConsumerFunction"}}]
    assert RESOURCES["ConsumerErrorsAlarm"]["Condition"] == "HasExampleConsumerAlarm"
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


@pytest.fixture
def consumer_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "table-from-the-template")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    monkeypatch.syspath_prepend(str(ROOT / "functions" / "consumer"))
    reset_layer_caches()
    yield load_function("consumer")
    reset_layer_caches()


def test_the_idempotency_table_has_the_key_and_expiry_the_code_writes(consumer_app: ModuleType) -> None:
    table = RESOURCES["ConsumerIdempotencyTable"]["Properties"]
    store = consumer_app.__dict__["_handled_states"]
    assert table["KeySchema"] == [{"AttributeName": store.key_attr, "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": store.key_attr, "AttributeType": "S"}]
    # DynamoDB's TTL removes remembered states on the attribute Powertools sets.
    assert table["TimeToLiveSpecification"] == {"AttributeName": store.expiry_attr, "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
