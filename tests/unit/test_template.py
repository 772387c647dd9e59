"""The SAM template: least privilege, the queue's FIFO settings, and the handler contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE: dict[str, Any] = cfn_yaml.load(str(ROOT / "template.yaml"))
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTIONS = {lid: r for lid, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}


def statements(function: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for policy in FUNCTIONS[function]["Properties"].get("Policies", []):
        assert isinstance(policy, dict), f"{function} uses a managed policy template; list statements instead"
        found.extend(policy["Statement"])
    return found


def grants(function: str) -> set[tuple[str, str]]:
    """(action, resource) pairs, with resources written as the template writes them."""
    pairs: set[tuple[str, str]] = set()
    for statement in statements(function):
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        pairs.update((action, repr(resource)) for action in actions for resource in resources)
    return pairs


def test_postback_function_may_only_send_to_its_queue_park_in_its_bucket_and_read_its_secret() -> None:
    assert grants("PostbackFunction") == {
        ("sqs:SendMessage", repr({"Fn::GetAtt": ["OrderUpdatesQueue", "Arn"]})),
        ("s3:PutObject", repr({"Fn::Sub": "${UndeliveredPostbacksBucket.Arn}/*"})),
        ("secretsmanager:GetSecretValue", repr({"Ref": "ApiCredentialsSecret"})),
    }


def test_order_updates_queue_is_high_throughput_fifo_with_a_fifo_dead_letter_queue() -> None:
    queue = RESOURCES["OrderUpdatesQueue"]["Properties"]
    assert queue["FifoQueue"] is True
    assert queue["DeduplicationScope"] == "messageGroup"
    assert queue["FifoThroughputLimit"] == "perMessageGroupId"
    dead_letter = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert RESOURCES[dead_letter]["Properties"]["FifoQueue"] is True


def test_undelivered_bucket_is_private_and_encrypted() -> None:
    bucket = RESOURCES["UndeliveredPostbacksBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert RESOURCES["UndeliveredPostbacksBucket"]["DeletionPolicy"] == "Retain"


def test_api_credentials_secret_starts_as_the_placeholder_the_functions_refuse() -> None:
    from kitehooks.credentials import PLACEHOLDER

    assert PLACEHOLDER in RESOURCES["ApiCredentialsSecret"]["Properties"]["SecretString"]


def test_every_function_uses_python313_and_the_shared_layer() -> None:
    function_globals = TEMPLATE["Globals"]["Function"]
    assert function_globals["Runtime"] == "python3.13"
    assert function_globals["Layers"] == [{"Ref": "KitehooksLayer"}]
    assert RESOURCES["KitehooksLayer"]["Metadata"]["BuildMethod"] == "python3.13"


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_handler_imports_with_only_its_code_uri_and_the_layer_on_sys_path(function: str) -> None:
    properties = FUNCTIONS[function]["Properties"]
    handler = properties.get("Handler", TEMPLATE["Globals"]["Function"]["Handler"])
    assert handler == "app.handler"
    code_uri = ROOT / properties["CodeUri"]
    layer = ROOT / RESOURCES["KitehooksLayer"]["Properties"]["ContentUri"]
    # The interpreter's site-packages stand in for the Lambda runtime and the built layer's
    # dependencies; the project root is not on the path, as in Lambda.
    probe = (
        "import sys, json\n"
        f"sys.path[:0] = [{str(code_uri)!r}, {str(layer)!r}]\n"
        "import app\n"
        "assert callable(app.handler)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'pydantic'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(AWS_DEFAULT_REGION="ap-south-1", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if function in ("PostbackFunction", "LoginFunction"):
        assert result.stdout.strip() == "[]", f"{function} must import neither requests nor pydantic"


def test_login_function_may_only_read_the_credentials() -> None:
    assert grants("LoginFunction") == {
        ("secretsmanager:GetSecretValue", repr({"Ref": "ApiCredentialsSecret"}))
    }


def test_callback_function_may_write_secrets_only_under_the_session_prefix() -> None:
    prefix = {
        "Fn::If": ["HasSessionPrefix", {"Ref": "SessionPrefix"}, {"Fn::Sub": "${AWS::StackName}/sessions"}]
    }
    arn = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${Prefix}/*"
    session_secrets = repr({"Fn::Sub": [arn, {"Prefix": prefix}]})
    assert grants("CallbackFunction") == {
        ("secretsmanager:GetSecretValue", repr({"Ref": "ApiCredentialsSecret"})),
        ("secretsmanager:CreateSecret", session_secrets),
        ("secretsmanager:PutSecretValue", session_secrets),
        ("dynamodb:PutItem", repr({"Fn::GetAtt": ["LoginStatesTable", "Arn"]})),
    }
    # The function writes under the same prefix the policy names.
    variables = FUNCTIONS["CallbackFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["SESSION_PREFIX"] == prefix


def test_routes_are_the_three_of_the_contract() -> None:
    routes = {
        (event["Properties"]["Method"], event["Properties"]["Path"], lid)
        for lid, function in FUNCTIONS.items()
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] == "HttpApi"
    }
    assert routes == {
        ("GET", "/login", "LoginFunction"),
        ("GET", "/callback", "CallbackFunction"),
        ("POST", "/postback", "PostbackFunction"),
    }


def test_session_function_may_read_and_update_sessions_and_list_names_only() -> None:
    prefix = {
        "Fn::If": ["HasSessionPrefix", {"Ref": "SessionPrefix"}, {"Fn::Sub": "${AWS::StackName}/sessions"}]
    }
    arn = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${Prefix}/*"
    session_secrets = repr({"Fn::Sub": [arn, {"Prefix": prefix}]})
    assert grants("SessionFunction") == {
        ("secretsmanager:GetSecretValue", repr({"Ref": "ApiCredentialsSecret"})),
        ("secretsmanager:GetSecretValue", session_secrets),
        ("secretsmanager:PutSecretValue", session_secrets),
        ("secretsmanager:ListSecrets", repr("*")),
    }
    schedule = FUNCTIONS["SessionFunction"]["Properties"]["Events"]["DailyExpiry"]["Properties"]
    assert (schedule["ScheduleExpression"], schedule["ScheduleExpressionTimezone"]) == (
        "cron(0 6 * * ? *)",
        "Asia/Kolkata",
    )
