"""The reconciler end to end on real parts: a scripted trading day at the Kite simulator, its
postbacks through the real postback handler (the template's functions on the local gateway), the
queue, order ledger, sessions and EventBridge in a moto server, and the reconciler's real handler.

What a consumer must see of each order: the states its postbacks delivered (a forged one
included: it verified), then every update state of Kite's history after the last genuine one
delivered, each once, in order, never going back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests

from kitehooks.clock import IST
from kitehooks.orders import settings as reconciler_config
from kitehooks.orders.history import update_states
from kitehooks.orders.ledger import OrderLedger
from kitehooks.orders.schedule import PollRecords, polling_order
from kitehooks.orders.states import OrderState, book_status, state_of_order
from kitehooks.sessions.store import new_session
from local.gateway import LocalGateway
from local.kite_orders import PostbackDelivery, TradingDay, trading_day
from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues
from tests.conftest import (
    REGION,
    TEMPLATE,
    TEST_API_KEY,
    FakeLambdaContext,
    load_function,
    reset_layer_caches,
)
from tests.event_capture import EventCapture, capture_events

UNCONFIRMED = "Kite order update unconfirmed"
Run = Callable[[], dict[str, Any]]


@pytest.fixture
def captured(aws_env: str) -> Iterator[EventCapture]:
    yield from capture_events()


@dataclass
class World:
    stack: ResourceValues
    sim: KiteSimulator
    gateway: LocalGateway
    prefix: str

    @property
    def queue_url(self) -> str:
        return self.stack["OrderUpdatesQueue"]["Ref"]

    def log_in(self, user_id: str) -> str:
        """A live session at the simulator for ``user_id``, stored as the callback stores it."""
        grant = self.sim.mint_session(user_id)
        session = new_session(
            user_id,
            grant["user_name"],
            TEST_API_KEY,
            grant["access_token"],
            grant["public_token"],
            grant["refresh_token"],
            grant["login_time"],
            datetime.now(UTC),
        )
        boto3.client("secretsmanager").create_secret(
            Name=f"{self.prefix}/{user_id}", SecretString=json.dumps(asdict(session))
        )
        return str(grant["access_token"])

    def session(self, user_id: str) -> dict[str, Any]:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=f"{self.prefix}/{user_id}")
        stored: dict[str, Any] = json.loads(value["SecretString"])
        return stored

    def day(self, **arguments: Any) -> TradingDay:
        """A scripted day whose Kite timestamps end well before now (past the reconciler's grace)."""
        start = (datetime.now(IST) - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S")
        return trading_day(self.sim.orders, start=start, **arguments)

    def messages(self) -> list[dict[str, Any]]:
        """Every message on the order-updates queue, in the order SQS gives them (drains it)."""
        sqs = boto3.client("sqs")
        found: list[dict[str, Any]] = []
        empty = 0
        while empty < 2:
            batch = sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=60,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
            ).get("Messages", [])
            empty = 0 if batch else empty + 1
            for message in batch:
                found.append(dict(message))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return found


def world_with(
    stack: ResourceValues,
    sim: KiteSimulator,
    moto: str,
    monkeypatch: pytest.MonkeyPatch,
    order_confirmation: str,
) -> Iterator[World]:
    prefix = f"kitehooks-reconcile-{uuid.uuid4().hex[:8]}/sessions"
    with LocalGateway(
        TEMPLATE,
        port=0,
        resources=stack,
        parameter_overrides={
            "AwsEndpointUrl": moto,
            "KiteApiRoot": sim.url,
            "KiteLoginUrl": f"{sim.url}/connect/login",
            "SessionPrefix": prefix,
            "OrderConfirmation": order_confirmation,
        },
        extra_env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION},
        workers_per_function=1,
    ) as gateway:
        sim.orders.configure(postback_url=f"{gateway.url}/postback")
        # The reconciler's own settings, as the template gives them (run here, in this process).
        for name, value in {
            "API_CREDENTIALS_SECRET_ID": stack["ApiCredentialsSecret"]["Ref"],
            "KITE_API_ROOT": sim.url,
            "SESSION_PREFIX": prefix,
            "ORDER_UPDATES_QUEUE_URL": stack["OrderUpdatesQueue"]["Ref"],
            "ORDER_LEDGER_TABLE": stack["OrderLedgerTable"]["Ref"],
            "KITEHOOKS_SESSION_FUNCTION": "SessionFunction",
            "AWS_ENDPOINT_URL_LAMBDA": gateway.url,
            "KITE_RECONCILE_REQUESTS_PER_SECOND": "10",
            "RECONCILER_GRACE_SECONDS": "60",
        }.items():
            monkeypatch.setenv(name, value)
        reset_caches()
        yield World(stack, sim, gateway, prefix)
    reset_caches()


def reset_caches() -> None:
    reset_layer_caches()
    reconciler_config.reconciler_settings.cache_clear()


@pytest.fixture
def world(
    stack: ResourceValues, sim: KiteSimulator, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    yield from world_with(stack, sim, moto_endpoint, monkeypatch, "on")


@pytest.fixture
def reconcile(world: World) -> Run:
    """The reconciler's handler, loaded as Lambda loads it; one call is one run."""
    app = load_function("reconciler")

    def run() -> dict[str, Any]:
        summary: dict[str, Any] = app.handler({"source": "test"}, FakeLambdaContext())
        return summary

    return run


# -- what a consumer must see -------------------------------------------------------------------


def state_key(status: str, filled: Any) -> str:
    return f"{book_status(status)}|{int(filled)}"


def expected_sequences(world: World, day: TradingDay) -> dict[str, list[str]]:
    """Per order: the states its postbacks delivered (once each, in sending order), then the
    update states of Kite's history after the last genuine one delivered."""
    delivered: dict[str, list[str]] = {order_id: [] for order_id in day.order_ids}
    genuine: dict[str, set[str]] = {order_id: set() for order_id in day.order_ids}
    for postback in day.postbacks:
        if postback.outcome != "delivered":
            continue
        key = state_key(postback.status, postback.filled_quantity)
        if key not in delivered[postback.order_id]:
            delivered[postback.order_id].append(key)
        if postback.kind != "forged":
            genuine[postback.order_id].add(key)
    expected: dict[str, list[str]] = {}
    for order_id in day.order_ids:
        keys = [found.state.key for found in update_states(world.sim.orders.history(order_id))]
        last = max((i for i, key in enumerate(keys) if key in genuine[order_id]), default=-1)
        expected[order_id] = delivered[order_id] + [key for key in keys[last + 1 :]]
    return expected


def sequences(messages: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for message in messages:
        state = state_of_order(json.loads(message["Body"]))
        assert state is not None, message["Body"]
        assert message["Attributes"]["MessageGroupId"] == state.order_id
        assert message["Attributes"]["MessageDeduplicationId"] == state.deduplication_id
        found.setdefault(state.order_id, []).append(state.key)
    return found


def emitted_metrics(output: str) -> dict[str, float]:
    """The metrics the handler flushed, from its CloudWatch embedded-metric-format line."""
    figures: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            for definition in document["_aws"]["CloudWatchMetrics"]:
                assert definition["Namespace"] == "kitehooks"
                for metric in definition["Metrics"]:
                    value = document[metric["Name"]]
                    figures[metric["Name"]] = sum(value) if isinstance(value, list) else value
    return figures


def source_of(message: dict[str, Any]) -> str:
    return str(message["MessageAttributes"]["source"]["StringValue"])


def forged(day: TradingDay) -> list[PostbackDelivery]:
    return [postback for postback in day.postbacks if postback.kind == "forged"]


# -- the scripted day ---------------------------------------------------------------------------


def test_a_day_with_drops_duplicates_and_a_forgery_reaches_the_queue_once_and_in_order(
    world: World, reconcile: Run, captured: EventCapture, capsys: pytest.CaptureFixture[str]
) -> None:
    world.log_in("AB1234")
    day = world.day(orders=60, seed=11, drop_share=0.2, duplicates=2, forgeries=1)
    outcomes = [postback.outcome for postback in day.postbacks]
    assert len(day.order_ids) >= 50, day.summary()
    assert day.states >= 200, day.summary()
    assert outcomes.count("dropped") >= 20, day.summary()
    assert outcomes.count("failed") == 0, day.summary()
    assert [postback.kind for postback in day.postbacks].count("duplicate") == 2
    [lie] = forged(day)

    capsys.readouterr()
    summary = reconcile()
    figures = emitted_metrics(capsys.readouterr().out)
    messages = world.messages()
    by_order = sequences(messages)
    expected = expected_sequences(world, day)
    assert {order_id: by_order.get(order_id, []) for order_id in expected} == expected
    # Every order ends on its final book state, and no order goes back (the forged claim aside).
    for order_id, keys in by_order.items():
        history_keys = [found.state.key for found in update_states(world.sim.orders.history(order_id))]
        positions = [history_keys.index(key) for key in keys if key in history_keys]
        assert positions == sorted(positions), order_id
        assert len(set(keys)) == len(keys), order_id
        assert history_keys[-1] in keys, order_id
    recovered = [message for message in messages if source_of(message) == "reconciler"]
    dropped_in_effect = sum(len(keys) for keys in expected.values()) - len(
        {
            (p.order_id, state_key(p.status, p.filled_quantity))
            for p in day.postbacks
            if p.outcome == "delivered"
        }
    )
    assert summary["recovered"] == len(recovered) == dropped_in_effect > 0
    assert summary["polled"] == 1
    assert summary["failed"] == []
    assert summary["token_invalid"] == []
    # One GET /orders, then a history only for the orders that changed.
    assert summary["kite_calls"] == 1 + summary["histories"] < 1 + len(day.order_ids)
    for message in recovered:
        body = json.loads(message["Body"])
        assert message["MessageAttributes"]["user_id"]["StringValue"] == "AB1234"
        assert "checksum" not in body  # Kite's order object, not a postback

    [event] = captured.of_type(UNCONFIRMED)
    assert event["source"] == "kitehooks"
    assert {k: event["detail"][k] for k in ("order_id", "user_id", "claimed_status", "reason")} == {
        "order_id": lie.order_id,
        "user_id": "AB1234",
        "claimed_status": book_status(lie.status),
        "reason": "state_not_in_history",
    }
    assert event["detail"]["claimed_filled_quantity"] == lie.filled_quantity
    assert event["detail"]["kite_status"] == world.sim.orders.history(lie.order_id)[-1]["status"]
    assert summary["unconfirmed"] == 1
    assert figures["OrderStatesRecovered"] == summary["recovered"]
    assert figures["OrderUpdateUnconfirmed"] == 1
    assert figures["KiteCalls"] == summary["kite_calls"]
    assert (figures["SessionsPolled"], figures["SessionsNotReached"]) == (1, 0)
    assert summary["confirmed"] > 0

    # A second run finds nothing to send and nothing left to judge.
    again = reconcile()
    assert (again["recovered"], again["unconfirmed"], again["confirmed"]) == (0, 0, 0)
    assert again["histories"] == 0
    assert world.messages() == []
    assert captured.of_type(UNCONFIRMED) == []


def test_with_no_drops_the_reconciler_sends_nothing(world: World, reconcile: Run) -> None:
    world.log_in("AB1234")
    day = world.day(orders=50, seed=3)
    assert {postback.outcome for postback in day.postbacks} == {"delivered"}
    summary = reconcile()
    assert summary["recovered"] == 0
    assert summary["unconfirmed"] == 0
    # Orders whose book state is the one their last postback claimed need no history.
    assert 0 < summary["histories"] < len(day.order_ids)
    claims = {(p.order_id, state_key(p.status, p.filled_quantity), p.order_timestamp) for p in day.postbacks}
    assert summary["confirmed"] == len(claims)
    messages = world.messages()
    assert {source_of(message) for message in messages} == {"postback"}
    assert sequences(messages) == expected_sequences(world, day)


def test_a_state_younger_than_the_grace_waits_for_a_later_run(world: World, reconcile: Run) -> None:
    world.log_in("AB1234")
    # Timestamps now: every dropped state is within the grace, its postback maybe in flight.
    day = trading_day(world.sim.orders, orders=5, seed=5, drop_share=1.0)
    assert {postback.outcome for postback in day.postbacks} == {"dropped"}
    summary = reconcile()
    assert summary["recovered"] == 0
    assert world.messages() == []
    # Changed, but each order's own time is within the grace: left for later without its history.
    assert (summary["histories"], summary["waiting"]) == (0, len(day.order_ids))


@pytest.fixture
def world_off(
    stack: ResourceValues, sim: KiteSimulator, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    yield from world_with(stack, sim, moto_endpoint, monkeypatch, "off")


def test_with_order_confirmation_off_dropped_states_are_still_recovered(world_off: World) -> None:
    world = world_off
    app = load_function("reconciler")
    world.log_in("AB1234")
    day = world.day(orders=50, seed=11, drop_share=0.2)
    assert [postback.outcome for postback in day.postbacks].count("dropped") >= 10
    table = world.stack["OrderLedgerTable"]["Ref"]
    assert boto3.client("dynamodb").scan(TableName=table)["Items"] == []  # the postback path wrote none

    summary = app.handler({}, FakeLambdaContext())
    by_order = sequences(world.messages())
    # Every update state of every order on the queue once: SQS's window folded the reconciler's
    # copies of what postbacks carried; what they did not carry is recovered.
    for order_id in day.order_ids:
        history_keys = [found.state.key for found in update_states(world.sim.orders.history(order_id))]
        assert sorted(by_order[order_id]) == sorted(history_keys), order_id
    assert summary["unconfirmed"] == 0  # no claims recorded: nothing to judge
    again = app.handler({}, FakeLambdaContext())
    assert again["recovered"] == 0
    assert world.messages() == []


# -- forgeries that must not hide or escape ------------------------------------------------------

LIMIT_ORDER = {
    "exchange": "NSE",
    "tradingsymbol": "INFY",
    "transaction_type": "BUY",
    "quantity": "10",
    "product": "CNC",
    "order_type": "LIMIT",
    "price": "1500",
}


def without_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    # The orders below move on the real clock: judge them at once.
    monkeypatch.setenv("RECONCILER_GRACE_SECONDS", "0")
    reset_caches()


def test_a_forged_complete_does_not_hide_the_real_one_when_its_postbacks_are_lost(
    world: World, reconcile: Run, monkeypatch: pytest.MonkeyPatch, captured: EventCapture
) -> None:
    without_grace(monkeypatch)
    world.log_in("AB1234")
    order_id = world.sim.orders.place("regular", LIMIT_ORDER, user_id="AB1234")
    world.sim.orders.forge(order_id, status="COMPLETE", filled_quantity=10)
    first = reconcile()
    assert first["unconfirmed"] == 1
    # Then the order really fills, and Kite's postbacks of it are lost.
    world.sim.orders.configure(drop_share=1.0, seed=1)
    world.sim.orders.fill(order_id, 5)
    world.sim.orders.fill(order_id)
    second = reconcile()
    assert second["recovered"] == 2  # OPEN with 5 filled, then the real COMPLETE
    table = world.stack["OrderLedgerTable"]["Ref"]
    item = boto3.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": "orders#AB1234"}, "sk": {"S": order_id}}
    )["Item"]
    assert set(item["delivered"]["SS"]) >= {"OPEN|5", "COMPLETE|10"}
    reconciled = [m for m in world.messages() if source_of(m) == "reconciler"]
    assert [json.loads(m["Body"])["filled_quantity"] for m in reconciled][:1] == [5]
    assert len(captured.of_type("Kite order update unconfirmed")) == 1


def test_a_forged_user_id_is_caught_in_that_users_book(
    world: World, reconcile: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_grace(monkeypatch)
    world.log_in("AB1234")
    world.log_in("CD5678")
    order_id = world.sim.orders.place("regular", LIMIT_ORDER, user_id="AB1234")
    # A genuine postback of AB1234's order, replayed with CD5678's user_id: still verifies.
    [genuine] = [d for d in world.sim.orders.deliveries() if d.order_id == order_id]
    replay = json.loads(genuine.body)
    replay.update(user_id="CD5678", status="COMPLETE", filled_quantity=10)
    answer = requests.post(f"{world.gateway.url}/postback", data=json.dumps(replay), timeout=10)
    assert answer.status_code == 200
    summary = reconcile()
    # CD5678's book has no such order today: the claim is unconfirmed (order_not_in_book).
    assert summary["unconfirmed"] == 1
    assert reconcile()["unconfirmed"] == 0  # once


def test_a_user_id_with_no_session_goes_to_the_back(world: World, reconcile: Run) -> None:
    world.log_in("AB1234")
    table = world.stack["OrderLedgerTable"]["Ref"]
    ledger = OrderLedger(boto3.client("dynamodb"), table)
    ledger.record_delivered("ZZ9999", "260101000000777", [OrderState("260101000000777", "OPEN", 0)])
    reconcile()
    polls = PollRecords(boto3.client("dynamodb"), table).load()
    assert "ZZ9999" in polls  # recorded: the next runs put it behind the real sessions
    assert polling_order(["AB1234", "ZZ9999"], polls, {})[0] == "AB1234"


def test_a_claim_missing_from_the_book_waits_out_the_grace_before_it_is_flagged(
    world: World, reconcile: Run
) -> None:
    # Kite's book may lag a postback it has just sent: within the grace, nothing is flagged.
    world.log_in("AB1234")
    world.log_in("CD5678")
    order_id = world.sim.orders.place("regular", LIMIT_ORDER, user_id="AB1234")
    [genuine] = [d for d in world.sim.orders.deliveries() if d.order_id == order_id]
    replay = json.loads(genuine.body)
    replay.update(user_id="CD5678")
    assert (
        requests.post(f"{world.gateway.url}/postback", data=json.dumps(replay), timeout=10).status_code == 200
    )
    assert reconcile()["unconfirmed"] == 0
