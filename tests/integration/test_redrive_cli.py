"""`python -m kitehooks.postbacks.redrive` and `make redrive` as a person runs them: a child process, boto3's
own settings (AWS_ENDPOINT_URL, the region variables), and one clear line when it cannot run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from kitehooks.orders.ledger import OrderLedger
from kitehooks.orders.states import OrderState
from kitehooks.postbacks import undelivered
from local.provision import ResourceValues
from local.samples import postback_body
from tests.conftest import REGION, ROOT, TEST_API_SECRET, closed_port, run_make

STACK_OUTPUTS = {
    "UndeliveredPostbacksBucketName": ("UndeliveredPostbacksBucket", "Ref"),
    "OrderUpdatesQueueUrl": ("OrderUpdatesQueue", "Ref"),
    "ApiCredentialsSecretArn": ("ApiCredentialsSecret", "Ref"),
}


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """This machine's environment without any AWS setting, and no AWS config files to fall back on."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(
        PYTHONPATH=str(ROOT / "layers" / "kitehooks"),
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",  # no instance role to find either
    )
    return env


@pytest.fixture
def emulator_env(clean_env: dict[str, str], aws_env: str) -> dict[str, str]:
    """Credentials and the emulator's endpoint, and deliberately no region (ap-south-1 by default)."""
    return {
        **clean_env,
        "AWS_ENDPOINT_URL": aws_env,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    }


def redrive(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kitehooks.postbacks.redrive", *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def resource_args(stack: ResourceValues, **replace: str) -> list[str]:
    values = {
        "--bucket": stack["UndeliveredPostbacksBucket"]["Ref"],
        "--queue-url": stack["OrderUpdatesQueue"]["Ref"],
        "--secret-id": stack["ApiCredentialsSecret"]["Ref"],
        **{f"--{name.replace('_', '-')}": value for name, value in replace.items()},
    }
    return [part for option, value in values.items() for part in (option, value)]


def park(stack: ResourceValues, status: str = "OPEN") -> str:
    return undelivered.park(
        boto3.client("s3"),
        stack["UndeliveredPostbacksBucket"]["Ref"],
        postback_body(TEST_API_SECRET, status=status),
        "verified",
        "queue-unavailable",
        "220303000308932",
        "req",
    )


def queued_sources(stack: ResourceValues) -> list[str]:
    messages = (
        boto3.client("sqs")
        .receive_message(
            QueueUrl=stack["OrderUpdatesQueue"]["Ref"], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        .get("Messages", [])
    )
    return [message["MessageAttributes"]["source"]["StringValue"] for message in messages]


def parked_keys(stack: ResourceValues) -> set[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=stack["UndeliveredPostbacksBucket"]["Ref"])
    return {item["Key"] for item in listing.get("Contents", [])}


def assert_fails_clearly(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    for phrase in phrases:
        assert phrase in line
    assert TEST_API_SECRET not in result.stdout + result.stderr


def cloudformation_stack(stack: ResourceValues, outputs: dict[str, tuple[str, str]]) -> str:
    """A CloudFormation stack in the emulator whose outputs name this test's resources."""
    name = f"kitehooks-{uuid.uuid4().hex[:8]}"
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": stack[logical_id][value]} for key, (logical_id, value) in outputs.items()},
    }
    boto3.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    return name


def test_redrive_through_the_emulator_with_no_region_set(
    stack: ResourceValues, emulator_env: dict[str, str]
) -> None:
    park(stack)
    result = redrive(emulator_env, *resource_args(stack))
    assert result.returncode == 0, result.stderr
    assert "sent 1 parked postback(s)" in result.stdout
    assert result.stderr == ""
    assert queued_sources(stack) == ["redrive"]
    assert parked_keys(stack) == set()


def test_the_region_comes_from_the_option_then_the_environment(
    stack: ResourceValues, emulator_env: dict[str, str]
) -> None:
    key = park(stack)
    # The emulator keeps queues per region: in eu-west-1 this stack's queue does not exist.
    elsewhere = {**emulator_env, "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert_fails_clearly(redrive(elsewhere, *resource_args(stack)), "does not exist")
    assert parked_keys(stack) == {key}

    result = redrive(elsewhere, *resource_args(stack), "--region", REGION)
    assert result.returncode == 0, result.stderr
    assert queued_sources(stack) == ["redrive"]


def test_redrive_reads_the_resources_from_the_stack_outputs(
    stack: ResourceValues, emulator_env: dict[str, str]
) -> None:
    park(stack)
    result = redrive(emulator_env, "--stack", cloudformation_stack(stack, STACK_OUTPUTS))
    assert result.returncode == 0, result.stderr
    assert queued_sources(stack) == ["redrive"]


def test_make_redrive_takes_redrive_args(stack: ResourceValues, emulator_env: dict[str, str]) -> None:
    park(stack)
    redrive_args = " ".join(resource_args(stack))
    result = run_make(emulator_env, "redrive", f"REDRIVE_ARGS={redrive_args}", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "sent 1 parked postback(s)" in result.stdout
    assert "--stack" not in result.stdout  # the resources were named: no stack to look up
    assert queued_sources(stack) == ["redrive"]


def test_missing_credentials(stack: ResourceValues, clean_env: dict[str, str], aws_env: str) -> None:
    key = park(stack)
    result = redrive({**clean_env, "AWS_ENDPOINT_URL": aws_env}, *resource_args(stack))
    assert_fails_clearly(result, "no AWS credentials")
    assert parked_keys(stack) == {key}


def test_an_invalid_region(emulator_env: dict[str, str], stack: ResourceValues) -> None:
    assert_fails_clearly(redrive(emulator_env, *resource_args(stack), "--region", "not a region"), "region")


def test_a_stack_that_does_not_exist(emulator_env: dict[str, str]) -> None:
    result = redrive(emulator_env, "--stack", "kitehooks-nowhere")
    assert_fails_clearly(result, "stack kitehooks-nowhere", "does not exist")


def test_a_stack_without_the_outputs(stack: ResourceValues, emulator_env: dict[str, str]) -> None:
    only_bucket = {"UndeliveredPostbacksBucketName": STACK_OUTPUTS["UndeliveredPostbacksBucketName"]}
    result = redrive(emulator_env, "--stack", cloudformation_stack(stack, only_bucket))
    assert_fails_clearly(result, "OrderUpdatesQueueUrl", "ApiCredentialsSecretArn")


@pytest.mark.parametrize(
    ("resource", "value", "phrase"),
    [
        ("bucket", "kitehooks-no-such-bucket", "bucket kitehooks-no-such-bucket does not exist"),
        ("queue_url", "gone", "does not exist"),
        ("secret_id", "kitehooks/NoSuchSecret", "secret kitehooks/NoSuchSecret does not exist"),
    ],
)
def test_a_resource_that_does_not_exist(
    stack: ResourceValues, emulator_env: dict[str, str], resource: str, value: str, phrase: str
) -> None:
    key = park(stack)
    if resource == "queue_url":
        value = stack["OrderUpdatesQueue"]["Ref"] + "-gone"
    result = redrive(emulator_env, *resource_args(stack, **{resource: value}))
    assert_fails_clearly(result, phrase)
    assert parked_keys(stack) == {key}
    assert queued_sources(stack) == []


def test_an_endpoint_that_is_not_running(stack: ResourceValues, emulator_env: dict[str, str]) -> None:
    stopped = f"http://127.0.0.1:{closed_port()}"
    result = redrive({**emulator_env, "AWS_ENDPOINT_URL": stopped}, *resource_args(stack))
    assert_fails_clearly(result, "cannot reach", stopped, "make dev")


def test_resources_not_named(emulator_env: dict[str, str]) -> None:
    assert_fails_clearly(redrive(emulator_env, "--bucket", "b"), "give --stack, or all of")


def test_an_endpoint_url_without_a_scheme(stack: ResourceValues, emulator_env: dict[str, str]) -> None:
    result = redrive({**emulator_env, "AWS_ENDPOINT_URL": "localhost:5000"}, *resource_args(stack))
    assert_fails_clearly(result, "Invalid endpoint", "http://")


# --- the order ledger ---------------------------------------------------------------------------

ORDER_ID = "220303000308932"  # Kite's example postback, as park() parks it: OPEN, filled 1, user AB1234


def record_delivered(table: str, status: str = "OPEN", filled: int = 1) -> None:
    """What the reconciler writes after sending a state from Kite's order book."""
    OrderLedger(boto3.client("dynamodb"), table).record_delivered(
        "AB1234", ORDER_ID, [OrderState(ORDER_ID, status, filled)]
    )


def test_the_stack_output_names_the_ledger(stack: ResourceValues, emulator_env: dict[str, str]) -> None:
    ledger_table = stack["OrderLedgerTable"]["Ref"]
    record_delivered(ledger_table)
    outputs = {**STACK_OUTPUTS, "OrderLedgerTableName": ("OrderLedgerTable", "Ref")}
    park(stack)
    result = redrive(emulator_env, "--stack", cloudformation_stack(stack, outputs))
    assert result.returncode == 0, result.stderr
    assert "sent 0 parked postback(s)" in result.stdout
    assert "1 parked postback(s) already delivered" in result.stdout
    assert queued_sources(stack) == []
    assert parked_keys(stack) == set()


def test_the_stacks_ledger_table_resource_names_the_ledger(
    stack: ResourceValues, emulator_env: dict[str, str]
) -> None:
    # A stack whose outputs do not name the table: its OrderLedgerTable resource does.
    name = f"kitehooks-{uuid.uuid4().hex[:8]}"
    table_name = f"{name}-ledger"
    template = {
        "Resources": {
            "OrderLedgerTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "TableName": table_name,
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [
                        {"AttributeName": "pk", "AttributeType": "S"},
                        {"AttributeName": "sk", "AttributeType": "S"},
                    ],
                    "KeySchema": [
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                },
            }
        },
        "Outputs": {
            key: {"Value": stack[logical_id][value]} for key, (logical_id, value) in STACK_OUTPUTS.items()
        },
    }
    boto3.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    record_delivered(table_name)
    park(stack)
    result = redrive(emulator_env, "--stack", name)
    assert result.returncode == 0, result.stderr
    assert "1 parked postback(s) already delivered" in result.stdout
    assert queued_sources(stack) == []


def test_a_stack_from_before_the_ledger_still_redrives(
    stack: ResourceValues, emulator_env: dict[str, str]
) -> None:
    record_delivered(stack["OrderLedgerTable"]["Ref"])  # a table the old stack does not know
    park(stack)
    result = redrive(emulator_env, "--stack", cloudformation_stack(stack, STACK_OUTPUTS))
    assert result.returncode == 0, result.stderr
    assert "sent 1 parked postback(s)" in result.stdout
    assert "no order ledger given" in result.stdout
    assert queued_sources(stack) == ["redrive"]


def test_a_ledger_table_that_does_not_exist_stops_before_anything_is_sent(
    stack: ResourceValues, emulator_env: dict[str, str]
) -> None:
    key = park(stack)
    result = redrive(emulator_env, *resource_args(stack), "--ledger-table", "kitehooks-no-such-ledger")
    assert_fails_clearly(result, "order ledger table kitehooks-no-such-ledger does not exist")
    assert parked_keys(stack) == {key}
    assert queued_sources(stack) == []


def test_an_unreachable_ledger_still_sends_and_says_so(
    stack: ResourceValues, emulator_env: dict[str, str]
) -> None:
    park(stack)
    unreachable = {**emulator_env, "AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{closed_port()}"}
    result = redrive(unreachable, *resource_args(stack), "--ledger-table", stack["OrderLedgerTable"]["Ref"])
    assert result.returncode == 0, result.stderr
    assert "sent 1 parked postback(s)" in result.stdout
    assert "warning: order ledger" in result.stdout
    assert "unreachable (DynamoDB DescribeTable failed (EndpointConnectionError))" in result.stdout
    assert "1 parked postback(s) sent without checking it" in result.stdout
    assert "warning: 1 sent postback(s) not recorded in the order ledger" in result.stdout
    assert queued_sources(stack) == ["redrive"]
    assert parked_keys(stack) == set()
    assert TEST_API_SECRET not in result.stdout + result.stderr


def test_make_redrive_passes_the_ledger_table(stack: ResourceValues, emulator_env: dict[str, str]) -> None:
    record_delivered(stack["OrderLedgerTable"]["Ref"])
    park(stack)
    redrive_args = " ".join([*resource_args(stack), "--ledger-table", stack["OrderLedgerTable"]["Ref"]])
    result = run_make(emulator_env, "redrive", f"REDRIVE_ARGS={redrive_args}", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "1 parked postback(s) already delivered" in result.stdout
    assert queued_sources(stack) == []
