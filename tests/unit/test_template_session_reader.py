"""SessionReaderPolicy, the managed policy users attach to their own functions for kitehooks.client:
it grants reading the sessions under the prefix and invoking SessionFunction, and nothing else."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode.cfn_yaml import load as cfn_load

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
PARTITION, REGION, ACCOUNT = "aws", "ap-south-1", "123456789012"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = cfn_load(str(TEMPLATE))
    return loaded


def plain(value: Any) -> Any:
    """cfn-lint's nodes as plain dicts, lists and strings, for equality checks."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return str(value) if isinstance(value, str) else value


def session_prefix(template: dict[str, Any], parameter: str, stack_name: str) -> str:
    """The session prefix as CloudFormation would resolve the template's own expression."""
    expression = plain(template["Outputs"]["SessionPrefixValue"]["Value"])
    condition, given, default = expression["Fn::If"]
    assert condition == "HasSessionPrefix"
    assert given == {"Ref": "SessionPrefix"}
    assert default == {"Fn::Sub": "${AWS::StackName}/sessions"}
    return parameter or f"{stack_name}/sessions"


def secret_pattern(template: dict[str, Any], prefix: str) -> str:
    statement = statements(template)[0]
    text, variables = plain(statement["Resource"])["Fn::Sub"]
    assert variables["Prefix"] == plain(template["Outputs"]["SessionPrefixValue"]["Value"])
    for name, value in {
        "AWS::Partition": PARTITION,
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "Prefix": prefix,
    }.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text
    return str(text)


def statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    policy = template["Resources"]["SessionReaderPolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    found: list[dict[str, Any]] = plain(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def test_the_policy_grants_exactly_reading_sessions_and_invoking_session_function(
    template: dict[str, Any],
) -> None:
    granted = statements(template)
    assert all(statement["Effect"] == "Allow" for statement in granted)
    assert all(set(statement) <= {"Sid", "Effect", "Action", "Resource"} for statement in granted)
    assert [(actions(statement), statement["Sid"]) for statement in granted] == [
        (["secretsmanager:GetSecretValue"], "ReadSessions"),
        (["lambda:InvokeFunction"], "ReportDeadSessions"),
    ]
    assert granted[1]["Resource"] == {"Fn::GetAtt": ["SessionFunction", "Arn"]}
    # Attached by users to their own roles: the stack attaches it to nobody.
    properties = template["Resources"]["SessionReaderPolicy"]["Properties"]
    assert not {"Roles", "Users", "Groups"} & set(properties)


@pytest.mark.parametrize(
    ("parameter", "prefix"), [("", "kitehooks/sessions"), ("desk/sessions", "desk/sessions")]
)
def test_the_session_secrets_match_and_nothing_else_does(
    template: dict[str, Any], parameter: str, prefix: str
) -> None:
    assert session_prefix(template, parameter, "kitehooks") == prefix
    pattern = secret_pattern(template, prefix)
    secrets = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:"
    # Secrets Manager appends a random six-character suffix to every secret's ARN.
    assert fnmatchcase(f"{secrets}{prefix}/AB1234-Xy12Ab", pattern)
    for other in (
        f"{secrets}kitehooks/ApiCredentialsSecret-Xy12Ab",  # the app's api_secret: never
        f"{secrets}{prefix}-other/AB1234-Xy12Ab",
        f"{secrets}other/{prefix}/AB1234-Xy12Ab",
        f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{prefix}/AB1234-Xy12Ab",
    ):
        assert not fnmatchcase(other, pattern), other


def test_the_prefix_is_the_one_the_session_functions_use(template: dict[str, Any]) -> None:
    prefix = plain(template["Outputs"]["SessionPrefixValue"]["Value"])
    for function in ("CallbackFunction", "SessionFunction"):
        variables = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert plain(variables["SESSION_PREFIX"]) == prefix, function


def test_outputs_give_what_a_users_function_needs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert plain(outputs["SessionReaderPolicyArn"]["Value"]) == {"Ref": "SessionReaderPolicy"}
    assert plain(outputs["SessionFunctionName"]["Value"]) == {"Ref": "SessionFunction"}
    assert "KITEHOOKS_SESSION_PREFIX" in outputs["SessionPrefixValue"]["Description"]
    assert "KITEHOOKS_SESSION_FUNCTION" in outputs["SessionReaderPolicyArn"]["Description"]
