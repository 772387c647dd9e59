"""The template's reconciler: its schedule (market hours, its interval and window, its switch), a
Timeout under the shortest interval, its settings, and a policy granting only what it does."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import load_function
from tests.unit.test_template import (
    FUNCTIONS,
    RESOURCES,
    TEMPLATE,
    allowed,
    evaluate,
    grants,
    parameter_values,
    translated,
)

RECONCILER = FUNCTIONS["ReconcilerFunction"]["Properties"]
SESSIONS = repr(
    {
        "Fn::Sub": [
            "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${Prefix}/*",
            {
                "Prefix": {
                    "Fn::If": [
                        "HasSessionPrefix",
                        {"Ref": "SessionPrefix"},
                        {"Fn::Sub": "${AWS::StackName}/sessions"},
                    ]
                }
            },
        ]
    }
)
LEDGER = repr({"Fn::GetAtt": ["OrderLedgerTable", "Arn"]})
LEDGER_INDEX = repr({"Fn::Sub": "${OrderLedgerTable.Arn}/index/RecentPostbacks"})


def market_hours() -> dict[str, Any]:
    event: dict[str, Any] = RECONCILER["Events"]["MarketHours"]
    assert event["Type"] == "ScheduleV2"
    properties: dict[str, Any] = event["Properties"]
    return properties


def test_the_schedule_runs_every_interval_in_the_window_on_weekdays_in_ist() -> None:
    schedule = market_hours()
    assert schedule["ScheduleExpression"] == {
        "Fn::Sub": "cron(0/${ReconcilerIntervalMinutes} ${ReconcilerHours} ? * MON-FRI *)"
    }
    assert schedule["ScheduleExpressionTimezone"] == "Asia/Kolkata"
    parameters = TEMPLATE["Parameters"]
    assert parameters["ReconcilerIntervalMinutes"]["Default"] == 1
    assert parameters["ReconcilerHours"]["Default"] == "9-15"  # 09:00-15:59 IST
    assert "Name" not in schedule  # two stacks in one account get their own


@pytest.mark.parametrize(("value", "state"), [("on", "ENABLED"), ("off", "DISABLED")])
def test_the_reconciler_switch_turns_only_the_schedule_on_or_off(value: str, state: str) -> None:
    assert TEMPLATE["Parameters"]["Reconciler"]["Default"] == "on"
    assert evaluate(market_hours()["State"], parameter_values(Reconciler=value)) == state
    assert "Condition" not in FUNCTIONS["ReconcilerFunction"]  # on-demand invokes still work


@pytest.mark.parametrize(
    ("hours", "ok"),
    [("9-15", True), ("9", True), ("0-23", True), ("24", False), ("9-15,17", False), ("*", False)],
)
def test_the_window_takes_an_hour_or_a_range_only(hours: str, ok: bool) -> None:
    assert allowed("ReconcilerHours", hours) is ok


def test_a_run_stops_before_the_next_one_starts() -> None:
    minimum = TEMPLATE["Parameters"]["ReconcilerIntervalMinutes"]["MinValue"]
    assert RECONCILER["Timeout"] < minimum * 60
    # The run's own deadline leaves its margin inside the Timeout.
    margin = load_function("reconciler").ANSWER_MARGIN_SECONDS
    assert 0 < margin < RECONCILER["Timeout"] / 5


def test_the_rate_stays_under_kites_limit() -> None:
    spec = TEMPLATE["Parameters"]["ReconcilerRequestsPerSecond"]
    assert spec["Default"] == 5
    assert spec["MaxValue"] < 10  # Kite's 10 requests/s per api_key, shared with the app's calls


def test_its_settings_name_the_ledger_in_both_confirmation_modes_and_the_session_function() -> None:
    variables = RECONCILER["Environment"]["Variables"]
    assert variables["ORDER_LEDGER_TABLE"] == {"Ref": "OrderLedgerTable"}  # never switched off
    assert variables["ORDER_UPDATES_QUEUE_URL"] == {"Ref": "OrderUpdatesQueue"}
    assert variables["KITEHOOKS_SESSION_FUNCTION"] == {"Ref": "SessionFunction"}
    assert variables["KITE_RECONCILE_REQUESTS_PER_SECOND"] == {"Ref": "ReconcilerRequestsPerSecond"}
    assert variables["RECONCILER_GRACE_SECONDS"] == "60"


def test_the_reconciler_may_do_only_what_it_does() -> None:
    assert grants("ReconcilerFunction") == {
        ("secretsmanager:GetSecretValue", repr({"Ref": "ApiCredentialsSecret"})),
        ("secretsmanager:GetSecretValue", SESSIONS),
        ("secretsmanager:ListSecrets", "'*'"),
        ("dynamodb:Query", LEDGER),
        ("dynamodb:Query", LEDGER_INDEX),
        ("dynamodb:GetItem", LEDGER),  # one order's states again, just before a recovery is sent
        ("dynamodb:UpdateItem", LEDGER),
        ("dynamodb:PutItem", LEDGER),
        ("sqs:SendMessage", repr({"Fn::GetAtt": ["OrderUpdatesQueue", "Arn"]})),
        (
            "events:PutEvents",
            repr(
                {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"}
            ),
        ),
        ("lambda:InvokeFunction", repr({"Fn::GetAtt": ["SessionFunction", "Arn"]})),
    }


def test_sam_makes_its_schedule_and_its_log_group() -> None:
    resources = translated()["Resources"]
    [schedule] = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Scheduler::Schedule"
        and r["Properties"]["Target"]["Input"] == '{"source": "schedule"}'
    ]
    assert schedule["Target"]["Arn"] == {"Fn::GetAtt": ["ReconcilerFunction", "Arn"]}
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert RESOURCES["ReconcilerFunctionLogs"]["Properties"]["LogGroupName"] == {
        "Fn::Sub": "/aws/lambda/${ReconcilerFunction}"
    }


def test_its_name_is_an_output_for_on_demand_runs() -> None:
    assert TEMPLATE["Outputs"]["ReconcilerFunctionName"]["Value"] == {"Ref": "ReconcilerFunction"}
