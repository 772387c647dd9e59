"""The template's session parts: who may send session events, the market-hours check schedules and
their switch, the optional e-mail on a session's end, and the compare-and-swap's permission."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.unit.test_template import (
    FUNCTIONS,
    RESOURCES,
    TEMPLATE,
    alarms,
    condition,
    evaluate,
    grants,
    parameter_values,
    resources_deployed,
    role_grants,
    translated,
)

DEFAULT_BUS = repr(
    {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"}
)
CHECK_SCHEDULES = ("MarketHoursCheck", "MarketCloseCheck")


def schedule(name: str) -> dict[str, Any]:
    event: dict[str, Any] = FUNCTIONS["SessionFunction"]["Properties"]["Events"][name]
    assert event["Type"] == "ScheduleV2"
    properties: dict[str, Any] = event["Properties"]
    return properties


@pytest.fixture(scope="module")
def cloudformation() -> dict[str, Any]:
    return translated()


def test_only_the_functions_that_emit_may_put_events_and_only_on_the_default_bus() -> None:
    for function in FUNCTIONS:
        events = {pair for pair in grants(function) if pair[0].startswith("events:")}
        expected = (
            {("events:PutEvents", DEFAULT_BUS)}
            if function in ("CallbackFunction", "SessionFunction", "ReconcilerFunction")
            else set()
        )
        assert events == expected, function


def test_only_the_session_function_may_move_awscurrent_and_only_on_sessions() -> None:
    for function in FUNCTIONS:
        moves = [pair for pair in grants(function) if pair[0] == "secretsmanager:UpdateSecretVersionStage"]
        if function != "SessionFunction":
            assert moves == [], function
            continue
        [(_, resource)] = moves
        assert ":secret:${Prefix}/*" in resource  # the session prefix, never the credentials secret
        assert "ApiCredentialsSecret" not in resource


def test_the_check_runs_every_15_minutes_from_0900_to_1530_ist_on_weekdays() -> None:
    expressions = {schedule(name)["ScheduleExpression"] for name in CHECK_SCHEDULES}
    assert expressions == {"cron(0/15 9-14 ? * MON-FRI *)", "cron(0,15,30 15 ? * MON-FRI *)"}
    for name in CHECK_SCHEDULES:
        properties = schedule(name)
        assert properties["ScheduleExpressionTimezone"] == "Asia/Kolkata"
        assert properties["Input"] == '{"action": "check"}'
        assert properties["OmitName"] is True
        assert properties["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["SessionDeadLetterQueue", "Arn"]}}
        # A late check is replaced by the next one: no point delivering it after 10 minutes.
        assert properties["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 600


def cron_values(field: str, top: int) -> set[int]:
    """The values a cron minute or hour field takes: ``a``, ``a,b``, ``a-b`` and ``a/step``."""
    values: set[int] = set()
    for part in field.split(","):
        if "/" in part:
            start, step = part.split("/")
            values.update(range(int(start), top, int(step)))
        elif "-" in part:
            low, high = part.split("-")
            values.update(range(int(low), int(high) + 1))
        else:
            values.add(int(part))
    return values


def firing_times() -> list[tuple[int, int]]:
    """Every (hour, minute) IST the check schedules fire on a weekday, read from the template."""
    times: set[tuple[int, int]] = set()
    for name in CHECK_SCHEDULES:
        minute, hour, day, _, weekdays, _ = schedule(name)["ScheduleExpression"][5:-1].split()
        assert (day, weekdays) == ("?", "MON-FRI")
        times.update((h, m) for h in cron_values(hour, 24) for m in cron_values(minute, 60))
    return sorted(times)


def test_the_two_crons_cover_market_hours_every_15_minutes_and_nothing_else() -> None:
    times = firing_times()
    assert times[0] == (9, 0)
    assert times[-1] == (15, 30)
    minutes = [hour * 60 + minute for hour, minute in times]
    assert all(later - earlier == 15 for earlier, later in itertools.pairwise(minutes))


@pytest.mark.parametrize(("value", "state"), [("on", "ENABLED"), ("off", "DISABLED")])
def test_the_session_check_parameter_turns_the_schedules_on_or_off(value: str, state: str) -> None:
    assert TEMPLATE["Parameters"]["SessionCheck"]["Default"] == "on"
    for name in CHECK_SCHEDULES:
        assert schedule(name)["State"] == {"Fn::If": ["HasSessionCheck", "ENABLED", "DISABLED"]}
        assert evaluate(schedule(name)["State"], parameter_values(SessionCheck=value)) == state
    # The daily expiry is never switched off with it.
    assert "State" not in schedule("DailyExpiry")


def test_sam_passes_the_switch_to_each_check_schedule(cloudformation: dict[str, Any]) -> None:
    schedules = [
        r["Properties"]
        for r in cloudformation["Resources"].values()
        if r["Type"] == "AWS::Scheduler::Schedule"
    ]
    checks = [s for s in schedules if s["Target"]["Input"] == '{"action": "check"}']
    assert len(checks) == 2
    for check in checks:
        assert check["State"] == {"Fn::If": ["HasSessionCheck", "ENABLED", "DISABLED"]}
        assert check["FlexibleTimeWindow"] == {"Mode": "OFF"}


def test_the_check_rate_stays_under_kites_limit() -> None:
    spec = TEMPLATE["Parameters"]["SessionCheckRequestsPerSecond"]
    assert spec["Default"] == 5
    assert spec["MaxValue"] < 10  # Kite's 10 requests/s per api_key, shared with the app's calls
    variables = FUNCTIONS["SessionFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["KITE_CHECK_REQUESTS_PER_SECOND"] == {"Ref": "SessionCheckRequestsPerSecond"}


def test_the_session_ended_email_exists_only_when_an_address_is_given() -> None:
    parts = {"SessionEndedTopic", "SessionEndedRule", "SessionEndedTopicPolicy"}
    assert not parts & set(resources_deployed(parameter_values()))
    assert parts <= set(resources_deployed(parameter_values(SessionEndedEmail="me@example.com")))
    assert not condition("HasSessionEndedEmail", parameter_values())


def test_the_session_ended_rule_matches_only_ended_events_of_kitehooks_on_the_default_bus() -> None:
    rule = RESOURCES["SessionEndedRule"]["Properties"]
    assert rule["EventBusName"] == "default"
    assert rule["EventPattern"] == {"source": ["kitehooks"], "detail-type": ["Kite session ended"]}
    [target] = rule["Targets"]
    assert target["Arn"] == {"Ref": "SessionEndedTopic"}
    # The mail says whose session ended and why; the event holds no token to leak anyway.
    assert set(target["InputTransformer"]["InputPathsMap"].values()) == {
        "$.detail.user_id",
        "$.detail.status",
        "$.detail.reason",
        "$.detail.at",
    }
    subscription = RESOURCES["SessionEndedTopic"]["Properties"]["Subscription"]
    assert subscription == [{"Protocol": "email", "Endpoint": {"Ref": "SessionEndedEmail"}}]


def test_only_the_rule_may_publish_to_the_session_ended_topic() -> None:
    [statement] = RESOURCES["SessionEndedTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sns:Publish"
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["SessionEndedRule", "Arn"]}}
    }


def test_events_not_sent_are_alarmed() -> None:
    with_email = parameter_values(AlarmEmail="ops@example.com")
    [alarm] = [a for a in alarms(with_email).values() if a.get("MetricName") == "SessionEventNotSent"]
    assert alarm["Namespace"] == "kitehooks"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "kitehooks"}]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")


def test_every_session_schedule_is_dead_lettered_by_its_own_role(cloudformation: dict[str, Any]) -> None:
    resources = cloudformation["Resources"]
    dead_letters = {"Fn::GetAtt": ["SessionDeadLetterQueue", "Arn"]}
    schedules = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Scheduler::Schedule"
        and r["Properties"]["Target"]["Arn"] == {"Fn::GetAtt": ["SessionFunction", "Arn"]}
    ]
    assert sorted(s["Target"]["Input"] for s in schedules) == [
        '{"action": "check"}',
        '{"action": "check"}',
        '{"action": "expire"}',
    ]
    for properties in schedules:
        assert "Name" not in properties  # two stacks in one account get their own
        target = properties["Target"]
        assert target["DeadLetterConfig"] == {"Arn": dead_letters}
        role = target["RoleArn"]["Fn::GetAtt"][0]
        assert ("sqs:SendMessage", repr(dead_letters)) in role_grants(cloudformation, role)
