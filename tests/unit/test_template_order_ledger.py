"""The template's order ledger: the table the code expects, the postback function's switch, and
the alarm on states the postback path could not record."""

from __future__ import annotations

import inspect
from typing import Any

from kitehooks.orders import ledger
from kitehooks.postbacks import receiver
from tests.unit.test_template import FUNCTIONS, RESOURCES, TEMPLATE, alarms, parameter_values, truth

WITH_EMAIL = parameter_values(AlarmEmail="ops@example.com")


def not_recorded_alarms(parameters: dict[str, str]) -> list[dict[str, Any]]:
    return [
        alarm
        for alarm in alarms(parameters).values()
        if (alarm["Namespace"], alarm["MetricName"]) == ("kitehooks", "OrderStateNotRecorded")
    ]


def test_states_not_recorded_are_alarmed_like_the_postback_paths_other_metrics() -> None:
    [alarm] = not_recorded_alarms(WITH_EMAIL)
    # The dimension Powertools gives every metric: the service name the template sets.
    service = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": service}]
    assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum",
        60,
        0,
        "GreaterThanThreshold",
    )
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    # What a person must know: nothing was lost, but claims go unconfirmed.
    assert "No update was lost" in alarm["AlarmDescription"]
    assert "unconfirmed" in alarm["AlarmDescription"]


def test_no_alarm_without_an_email() -> None:
    assert not_recorded_alarms(parameter_values()) == []


def test_the_alarm_watches_the_metric_the_receiver_counts() -> None:
    source = inspect.getsource(receiver)
    assert '"OrderStateNotRecorded"' in source
    assert not_recorded_alarms(WITH_EMAIL)[0]["MetricName"] == "OrderStateNotRecorded"


def test_the_postback_function_is_given_the_ledger_only_with_order_confirmation_on() -> None:
    variable = FUNCTIONS["PostbackFunction"]["Properties"]["Environment"]["Variables"]["ORDER_LEDGER_TABLE"]
    condition, on, off = variable["Fn::If"]
    assert condition == "HasOrderConfirmation"
    assert on == {"Ref": "OrderLedgerTable"}
    assert off == ""  # empty: the receiver writes nothing (config.order_ledger_table is None)
    assert truth(TEMPLATE["Conditions"][condition], parameter_values())  # on by default
    assert not truth(TEMPLATE["Conditions"][condition], parameter_values(OrderConfirmation="off"))


def test_the_ledger_table_is_what_the_ledger_code_reads_and_writes() -> None:
    properties = RESOURCES["OrderLedgerTable"]["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert [(key["AttributeName"], key["KeyType"]) for key in properties["KeySchema"]] == [
        ("pk", "HASH"),
        ("sk", "RANGE"),
    ]
    [index] = properties["GlobalSecondaryIndexes"]
    assert index["IndexName"] == ledger.RECENT_POSTBACKS_INDEX
    assert [(key["AttributeName"], key["KeyType"]) for key in index["KeySchema"]] == [
        ("day", "HASH"),
        ("touched_at", "RANGE"),
    ]
    # Only the keys are read from the index: users_with_postbacks_since reads pk.
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    types = {
        attribute["AttributeName"]: attribute["AttributeType"]
        for attribute in properties["AttributeDefinitions"]
    }
    assert types == {"pk": "S", "sk": "S", "day": "S", "touched_at": "N"}
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    source = inspect.getsource(ledger)
    assert "expires_at = :expires" in source
    # The index keys are set once per order (an index key that never changes costs no index write).
    assert "touched_at = if_not_exists(touched_at, :at)" in source
