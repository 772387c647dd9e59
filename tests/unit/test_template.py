"""The SAM template: least privilege, the queue's FIFO settings, and the handler contract."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
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
        for statement in policy["Statement"]:
            # A grant under a condition (!If [cond, statement, AWS::NoValue]) counts as granted.
            if "Fn::If" in statement:
                _, granted, otherwise = statement["Fn::If"]
                assert otherwise == {"Ref": "AWS::NoValue"}
                statement = granted
            found.append(statement)
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
    from kitehooks.postbacks.undelivered import PREFIX

    assert grants("PostbackFunction") == {
        ("sqs:SendMessage", repr({"Fn::GetAtt": ["OrderUpdatesQueue", "Arn"]})),
        # Only under the parking prefix the receiver writes to.
        ("s3:PutObject", repr({"Fn::Sub": f"${{UndeliveredPostbacksBucket.Arn}}/{PREFIX}*"})),
        ("secretsmanager:GetSecretValue", repr({"Ref": "ApiCredentialsSecret"})),
        # With OrderConfirmation=on only: the one ledger write per queued postback.
        ("dynamodb:UpdateItem", repr({"Fn::GetAtt": ["OrderLedgerTable", "Arn"]})),
    }
    [ledger_grant] = [
        statement["Fn::If"]
        for statement in FUNCTIONS["PostbackFunction"]["Properties"]["Policies"][0]["Statement"]
        if "Fn::If" in statement
    ]
    assert ledger_grant[0] == "HasOrderConfirmation"


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


DEFAULT_BUS = repr(
    {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"}
)


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
        ("events:PutEvents", DEFAULT_BUS),  # "Kite session started"
    }
    # The function writes under the same prefix the policy names.
    variables = FUNCTIONS["CallbackFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["SESSION_PREFIX"] == prefix


def test_routes_are_the_three_of_the_contract_and_the_landing_page() -> None:
    routes = {
        (event["Properties"]["Method"], event["Properties"]["Path"], lid)
        for lid, function in FUNCTIONS.items()
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] == "HttpApi"
    }
    assert routes == {
        ("GET", "/", "LoginFunction"),  # what this is, a link to /login: nothing about any user
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
        # The compare-and-swap: AWSCURRENT moves only from the version the function read.
        ("secretsmanager:UpdateSecretVersionStage", session_secrets),
        ("secretsmanager:ListSecrets", repr("*")),
        ("events:PutEvents", DEFAULT_BUS),  # "Kite session ended"
    }
    schedule = FUNCTIONS["SessionFunction"]["Properties"]["Events"]["DailyExpiry"]["Properties"]
    assert (schedule["ScheduleExpression"], schedule["ScheduleExpressionTimezone"]) == (
        "cron(0 6 * * ? *)",
        "Asia/Kolkata",
    )


# --- Template values under given parameters -------------------------------------------------

NO_VALUE = object()  # what !Ref AWS::NoValue leaves: the property is absent


def parameter_values(**given: str) -> dict[str, str]:
    values = {name: str(spec.get("Default", "")) for name, spec in TEMPLATE["Parameters"].items()}
    values.update(given)
    return values


def condition(name: str, parameters: dict[str, str]) -> bool:
    return truth(TEMPLATE["Conditions"][name], parameters)


def truth(expression: dict[str, Any], parameters: dict[str, str]) -> bool:
    ((function, argument),) = expression.items()
    if function == "Condition":
        return condition(argument, parameters)
    if function == "Fn::Not":
        return not truth(argument[0], parameters)
    if function == "Fn::Equals":
        return bool(evaluate(argument[0], parameters) == evaluate(argument[1], parameters))
    if function == "Fn::And":
        return all(truth(part, parameters) for part in argument)
    if function == "Fn::Or":
        return any(truth(part, parameters) for part in argument)
    raise AssertionError(f"{function} is not evaluated by these tests")


def evaluate(value: Any, parameters: dict[str, str]) -> Any:
    """The few intrinsics the tested properties use: Ref to a parameter, Fn::If, AWS::NoValue."""
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return NO_VALUE if argument == "AWS::NoValue" else parameters[argument]
        if function == "Fn::If":
            name, when_true, when_false = argument
            return evaluate(when_true if condition(name, parameters) else when_false, parameters)
    return value


def resources_deployed(parameters: dict[str, str]) -> dict[str, Any]:
    return {
        lid: resource
        for lid, resource in RESOURCES.items()
        if "Condition" not in resource or condition(resource["Condition"], parameters)
    }


def allowed(parameter: str, value: str) -> bool:
    spec = TEMPLATE["Parameters"][parameter]
    if "AllowedValues" in spec and value not in spec["AllowedValues"]:
        return False
    return "AllowedPattern" not in spec or re.fullmatch(spec["AllowedPattern"], value) is not None


# --- Postbacks: concurrency, body size, parked objects -----------------------------------------


def test_postback_concurrency_is_reserved_only_when_the_parameter_is_given() -> None:
    spec = TEMPLATE["Parameters"]["PostbackReservedConcurrency"]
    assert spec["Default"] == ""
    assert "10 concurrent executions" in spec["Description"]  # why the default reserves nothing
    reserved = FUNCTIONS["PostbackFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert evaluate(reserved, parameter_values()) is NO_VALUE
    assert evaluate(reserved, parameter_values(PostbackReservedConcurrency="20")) == "20"
    assert [
        name for name in FUNCTIONS if "ReservedConcurrentExecutions" in FUNCTIONS[name]["Properties"]
    ] == ["PostbackFunction"]


@pytest.mark.parametrize(
    ("value", "ok"), [("", True), ("1", True), ("250", True), ("0", False), ("ten", False)]
)
def test_postback_reserved_concurrency_takes_a_positive_count_or_nothing(value: str, ok: bool) -> None:
    assert allowed("PostbackReservedConcurrency", value) is ok


def test_postback_bodies_are_limited_to_16_kb_by_default() -> None:
    # Kite's bodies are about 1.5 KB; an unauthenticated request can store at most this much.
    assert TEMPLATE["Parameters"]["MaxPostbackBytes"]["Default"] == 16384
    variables = FUNCTIONS["PostbackFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["MAX_POSTBACK_BYTES"] == {"Ref": "MaxPostbackBytes"}


def lifecycle_rules_for(key: str) -> list[dict[str, Any]]:
    rules = RESOURCES["UndeliveredPostbacksBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    return [rule for rule in rules if rule["Status"] == "Enabled" and key.startswith(rule.get("Prefix", ""))]


def expiry_days(key: str) -> tuple[int, int]:
    """(current, noncurrent) days before S3 deletes the object; overlapping rules: the shorter wins."""
    rules = lifecycle_rules_for(key)
    current = [rule["ExpirationInDays"] for rule in rules if "ExpirationInDays" in rule]
    noncurrent = [
        rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
        for rule in rules
        if "NoncurrentVersionExpiration" in rule
    ]
    assert current, f"{key} would stay for ever"
    assert noncurrent, f"old versions of {key} would stay for ever"
    return min(current), min(noncurrent)


@pytest.mark.parametrize(
    ("verification", "days"), [("rejected", (14, 1)), ("unverified", (90, 30)), ("verified", (90, 30))]
)
def test_every_kind_of_parked_postback_expires(verification: str, days: tuple[int, int]) -> None:
    from kitehooks.postbacks.undelivered import PREFIX

    key = f"{PREFIX}{verification}/2026/01/02/030405.000000-{'0' * 64}.json"
    # Junk (a wrong checksum) goes within two weeks and leaves no old version behind for long;
    # real updates stay long enough to notice the alarm and redrive.
    assert expiry_days(key) == days


def test_every_verification_the_receiver_writes_has_its_own_rule() -> None:
    from typing import get_args

    from kitehooks.postbacks.undelivered import PREFIX, Verification

    prefixes = {
        rule.get("Prefix")
        for rule in RESOURCES["UndeliveredPostbacksBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    }
    assert {f"{PREFIX}{verification}/" for verification in get_args(Verification)} <= prefixes


@pytest.mark.parametrize("key", ["undelivered/other/x.json", "elsewhere.json"])
def test_nothing_in_the_bucket_stays_for_ever(key: str) -> None:
    assert expiry_days(key) == (90, 30)
    assert any(rule.get("ExpiredObjectDeleteMarker") is True for rule in lifecycle_rules_for(key))


# --- Alarms --------------------------------------------------------------------------------------


def alarms(parameters: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {
        lid: resource["Properties"]
        for lid, resource in resources_deployed(parameters).items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def lambda_errors_alarm(function: str, parameters: dict[str, str]) -> dict[str, Any] | None:
    for alarm in alarms(parameters).values():
        if (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors") and alarm["Dimensions"] == [
            {"Name": "FunctionName", "Value": {"Ref": function}}
        ]:
            return alarm
    return None


# The example consumer is off by default; on here so that its alarm is checked with the others.
WITH_EMAIL = parameter_values(AlarmEmail="ops@example.com", ExampleConsumer="on")


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_has_an_errors_alarm_when_an_email_is_given(function: str) -> None:
    alarm = lambda_errors_alarm(function, WITH_EMAIL)
    assert alarm is not None, f"no Errors alarm for {function}"
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum",
        0,
        "GreaterThanThreshold",
    )
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    # No e-mail: no alarms, no topic.
    assert lambda_errors_alarm(function, parameter_values(ExampleConsumer="on")) is None


def test_no_alarm_or_topic_without_an_email() -> None:
    deployed = resources_deployed(parameter_values())
    assert not [
        lid for lid, r in deployed.items() if r["Type"] in ("AWS::CloudWatch::Alarm", "AWS::SNS::Topic")
    ]


def metric_alarm(namespace: str, metric: str) -> dict[str, Any]:
    [alarm] = [
        a for a in alarms(WITH_EMAIL).values() if (a["Namespace"], a["MetricName"]) == (namespace, metric)
    ]
    return alarm


def test_parked_postbacks_alarm_apart_from_unverified_ones() -> None:
    # PostbackParked: verified updates waiting for the queue. PostbackParkedUnverified: the
    # credentials could not check them; the fix is the secret, then redrive.
    assert "redrive" in metric_alarm("kitehooks", "PostbackParked")["AlarmDescription"]
    unverified = metric_alarm("kitehooks", "PostbackParkedUnverified")
    assert "credentials" in unverified["AlarmDescription"]
    assert "redrive" in unverified["AlarmDescription"]


def test_the_session_dead_letter_queue_has_an_alarm() -> None:
    queue = {"Name": "QueueName", "Value": {"Fn::GetAtt": ["SessionDeadLetterQueue", "QueueName"]}}
    [alarm] = [a for a in alarms(WITH_EMAIL).values() if a["Dimensions"] == [queue]]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")


# --- The session function's failures -------------------------------------------------------------


def test_the_daily_expiry_is_retried_and_dead_lettered() -> None:
    session = FUNCTIONS["SessionFunction"]["Properties"]
    schedule = session["Events"]["DailyExpiry"]
    assert schedule["Type"] == "ScheduleV2"
    properties = schedule["Properties"]
    # The schedule's own retries cover failing to invoke (throttling, permissions)...
    assert 1 <= properties["RetryPolicy"]["MaximumRetryAttempts"] <= 3
    assert 60 <= properties["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 86400
    dead_letters = {"Fn::GetAtt": ["SessionDeadLetterQueue", "Arn"]}
    assert properties["DeadLetterConfig"] == {"Arn": dead_letters}
    # ...and, as the schedule invokes asynchronously, Lambda retries a run that raised, then
    # records it in the same queue.
    invoke = session["EventInvokeConfig"]
    assert 1 <= invoke["MaximumRetryAttempts"] <= 2
    assert invoke["DestinationConfig"]["OnFailure"] == {"Type": "SQS", "Destination": dead_letters}
    # Scheduler and Lambda destinations take standard queues only.
    assert not RESOURCES["SessionDeadLetterQueue"]["Properties"].get("FifoQueue")
    assert properties["OmitName"] is True  # two stacks in one account get two schedules


def translated() -> dict[str, Any]:
    """The template as SAM turns it into CloudFormation (no AWS call: no managed policies used)."""
    from samtranslator.parser.parser import Parser  # type: ignore[import-untyped]
    from samtranslator.translator.translator import Translator  # type: ignore[import-untyped]

    template = json.loads(json.dumps(TEMPLATE))  # a plain copy: SAM edits what it is given
    for resource in template["Resources"].values():  # SAM wants packaged code here
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


@pytest.fixture(scope="module")
def cloudformation() -> dict[str, Any]:
    return translated()


def role_grants(cloudformation: dict[str, Any], role: str) -> set[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    for policy in cloudformation["Resources"][role]["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            pairs.update((action, repr(statement["Resource"])) for action in actions)
    return pairs


def test_sam_grants_what_the_dead_letter_queue_needs(cloudformation: dict[str, Any]) -> None:
    resources = cloudformation["Resources"]
    dead_letters = repr({"Fn::GetAtt": ["SessionDeadLetterQueue", "Arn"]})
    [schedule] = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Scheduler::Schedule"
        and r["Properties"]["Target"].get("Input") == '{"action": "expire"}'
    ]
    assert "Name" not in schedule
    target = schedule["Target"]
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["SessionDeadLetterQueue", "Arn"]}}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    schedule_role = target["RoleArn"]["Fn::GetAtt"][0]
    assert ("sqs:SendMessage", dead_letters) in role_grants(cloudformation, schedule_role)
    assert ("sqs:SendMessage", dead_letters) in role_grants(cloudformation, "SessionFunctionRole")
    [invoke_config] = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"
    ]
    assert invoke_config["FunctionName"] == {"Ref": "SessionFunction"}


def test_sam_passes_the_optional_reserved_concurrency_through(cloudformation: dict[str, Any]) -> None:
    postback = cloudformation["Resources"]["PostbackFunction"]["Properties"]
    assert postback["ReservedConcurrentExecutions"] == {
        "Fn::If": [
            "HasPostbackReservedConcurrency",
            {"Ref": "PostbackReservedConcurrency"},
            {"Ref": "AWS::NoValue"},
        ]
    }


# --- Logging and time limits ----------------------------------------------------------------------

# Lambda's ApplicationLogLevel values (advanced logging controls).
LAMBDA_APPLICATION_LOG_LEVELS = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}


def test_log_level_sets_lambdas_filter_and_powertools_alike() -> None:
    function_globals = TEMPLATE["Globals"]["Function"]
    assert function_globals["LoggingConfig"] == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": {"Ref": "LogLevel"},
    }
    assert function_globals["Environment"]["Variables"]["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert not [lid for lid, f in FUNCTIONS.items() if "LoggingConfig" in f["Properties"]]
    assert set(TEMPLATE["Parameters"]["LogLevel"]["AllowedValues"]) <= LAMBDA_APPLICATION_LOG_LEVELS


@pytest.mark.parametrize("level", TEMPLATE["Parameters"]["LogLevel"]["AllowedValues"])
def test_each_log_level_is_the_one_powertools_applies_without_a_warning(level: str) -> None:
    # In Lambda, ApplicationLogLevel arrives as AWS_LAMBDA_LOG_LEVEL and wins over
    # POWERTOOLS_LOG_LEVEL; Powertools warns when the two disagree.
    probe = (
        "import logging, warnings\n"
        "warnings.simplefilter('error')\n"
        "from aws_lambda_powertools import Logger\n"
        "print(logging.getLevelName(Logger(service='probe').log_level))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("LOG_LEVEL")}
    env.update(AWS_LAMBDA_LOG_LEVEL=level, POWERTOOLS_LOG_LEVEL=level)
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == {"WARN": "WARNING"}.get(level, level)


def test_functions_behind_the_api_stop_before_api_gateway_gives_up() -> None:
    # API Gateway answers 503 itself at 30 s; kitehooks' own answer must come first.
    timeouts = {
        lid: FUNCTIONS[lid]["Properties"].get("Timeout") for lid in ("CallbackFunction", "PostbackFunction")
    }
    assert timeouts == {"CallbackFunction": 29, "PostbackFunction": 28}


def test_a_throttled_postback_and_any_5xx_to_kite_are_alarmed() -> None:
    """Kite never resends a postback answered 5xx, and a throttled one is neither an Errors nor
    a PostbackLost: Throttles on the function and 5xx on the API are alarmed."""
    alarms = {
        (props["Namespace"], props["MetricName"]): props
        for resource in TEMPLATE["Resources"].values()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
        for props in [resource["Properties"]]
    }
    throttles = alarms[("AWS/Lambda", "Throttles")]
    assert throttles["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "PostbackFunction"}}]
    server_errors = alarms[("AWS/ApiGateway", "5xx")]
    assert {d["Name"]: d["Value"] for d in server_errors["Dimensions"]} == {
        "ApiId": {"Ref": "HttpApi"},
        "Stage": {"Ref": "Stage"},
    }


def test_the_time_budgets_fit_the_functions_timeouts() -> None:
    """The postback keeps 5 s for parking after 7 s of credentials and 8 s of sending, inside a
    deadline 2.5 s before its Timeout; the callback answers before API Gateway's 30 s."""
    globals_timeout = TEMPLATE["Globals"]["Function"]["Timeout"]
    postback = FUNCTIONS["PostbackFunction"]["Properties"].get("Timeout", globals_timeout)
    callback = FUNCTIONS["CallbackFunction"]["Properties"].get("Timeout", globals_timeout)
    assert 7 + 8 + 5 + 2.5 <= postback < 30
    assert callback < 30
