"""The reconciler across sessions and under Kite's limits: a dead token ends that session (through
SessionFunction's check on the local gateway) and not the run; Kite's 429 is waited out; two runs
at once send nothing twice and announce an unconfirmed update once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from kitehooks.deadline import Deadline
from kitehooks.orders.schedule import PollRecords, polling_order
from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues
from tests.conftest import FakeLambdaContext, closed_port, load_function
from tests.event_capture import EventCapture, capture_events
from tests.faults import HangingEndpoint, TricklingEndpoint
from tests.integration.test_reconciler import (
    UNCONFIRMED,
    World,
    expected_sequences,
    reset_caches,
    sequences,
    state_key,
    world_with,
)

WAIT_SECONDS = 30


@pytest.fixture
def world(
    stack: ResourceValues, sim: KiteSimulator, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    yield from world_with(stack, sim, moto_endpoint, monkeypatch, "on")


@pytest.fixture
def events(world: World) -> Iterator[EventCapture]:
    yield from capture_events()


def reconcile() -> dict[str, Any]:
    summary: dict[str, Any] = load_function("reconciler").handler({}, FakeLambdaContext())
    return summary


def test_a_dead_token_ends_that_session_and_the_run_reconciles_the_others(
    world: World, events: EventCapture, capfd: pytest.CaptureFixture[str]
) -> None:
    tokens = [world.log_in("AB1234"), world.log_in("CD5678")]
    day = world.day(orders=40, seed=5, drop_share=0.3, users=["AB1234", "CD5678"])
    owner = {order_id: world.sim.orders.history(order_id)[0]["placed_by"] for order_id in day.order_ids}
    assert set(owner.values()) == {"AB1234", "CD5678"}
    # A login elsewhere ends CD5678's token at Kite; kitehooks learns it only from Kite's answer.
    assert world.sim.kill_access_tokens(user_id="CD5678") == 1

    summary = reconcile()
    assert summary["token_invalid"] == ["CD5678"]
    assert summary["polled"] == 1
    assert summary["failed"] == []
    by_order = sequences(world.messages())
    expected = expected_sequences(world, day)
    delivered: dict[str, list[str]] = {order_id: [] for order_id in day.order_ids}
    for postback in day.postbacks:
        key = state_key(postback.status, postback.filled_quantity)
        if postback.outcome == "delivered" and key not in delivered[postback.order_id]:
            delivered[postback.order_id].append(key)
    for order_id, user_id in owner.items():
        # AB1234's orders reconciled; CD5678's hold what their postbacks delivered, nothing more.
        want = expected[order_id] if user_id == "AB1234" else delivered[order_id]
        assert by_order.get(order_id, []) == want, order_id
    recoverable = sum(
        len(expected[o]) - len(delivered[o]) for o, user_id in owner.items() if user_id == "AB1234"
    )
    assert summary["recovered"] == recoverable > 0

    # SessionFunction's check (invoked asynchronously through the local Invoke API) ends it.
    until = time.monotonic() + WAIT_SECONDS
    while world.session("CD5678")["status"] == "active":
        assert time.monotonic() < until, "the dead session was never marked"
        time.sleep(0.2)
    assert world.session("CD5678")["status"] == "expired"
    assert world.session("AB1234")["status"] == "active"
    [ended] = [e for e in events.events() if e["detail-type"] == "Kite session ended"]
    assert (ended["detail"]["user_id"], ended["detail"]["reason"]) == ("CD5678", "token_invalid")

    # The next run skips the ended session and finds nothing left for AB1234.
    again = reconcile()
    assert (again["token_invalid"], again["inactive"], again["recovered"]) == ([], 1, 0)
    output = capfd.readouterr()
    for token in tokens:
        assert token not in output.out + output.err


def test_kites_429_is_waited_out_and_the_run_completes(world: World) -> None:
    world.log_in("AB1234")
    day = world.day(orders=20, seed=9, drop_share=0.5)
    world.sim.orders.configure(rate_limit=3)  # requests/s; the run is allowed 10
    started = time.monotonic()
    summary = reconcile()
    assert summary["rate_limited"] > 0
    assert summary["failed"] == []
    assert summary["not_reached"] == 0
    assert summary["kite_calls"] == 1 + summary["histories"] + summary["rate_limited"]
    assert time.monotonic() - started >= summary["rate_limited"] * 0.9  # it held back each time
    assert sequences(world.messages()) == {
        order_id: keys for order_id, keys in expected_sequences(world, day).items() if keys
    }


def test_two_runs_at_once_send_nothing_twice_and_announce_once(world: World, events: EventCapture) -> None:
    world.log_in("AB1234")
    day = world.day(orders=30, seed=21, drop_share=0.3, forgeries=1)
    world.sim.set_delay(0.05)  # slow Kite: the two runs overlap for seconds
    app = load_function("reconciler")
    results: list[Any] = []

    def other_run() -> None:
        # The same run without the handler's metrics flush, which is the process's own.
        results.append(app.run(Deadline.after(40)))

    thread = threading.Thread(target=other_run)
    thread.start()
    time.sleep(0.1)
    mine = app.handler({}, FakeLambdaContext())
    thread.join(timeout=60)
    [theirs] = results
    assert mine["histories"] > 0
    assert theirs.histories > 0  # both looked at the changed orders
    assert mine["unconfirmed"] + theirs.unconfirmed == 1
    assert sequences(world.messages()) == expected_sequences(world, day)
    assert len(events.of_type(UNCONFIRMED)) == 1


@dataclass
class ShortContext(FakeLambdaContext):
    """A Lambda context with little time left: the run's deadline comes after one session or two."""

    remaining_ms: int = 30_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def polled_users(world: World) -> dict[str, int]:
    items = boto3.client("dynamodb").query(
        TableName=world.stack["OrderLedgerTable"]["Ref"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "sessions"}},
    )["Items"]
    return {item["sk"]["S"]: int(item["polled_at"]["N"]) for item in items}


def test_sessions_a_run_did_not_reach_come_first_in_the_next(world: World) -> None:
    users = ["AA1111", "BB2222", "CC3333", "DD4444"]
    for user_id in users:
        world.log_in(user_id)
    world.day(orders=12, seed=2, drop_share=0.5, users=users)
    world.sim.set_delay(0.6)  # each Kite call takes a while: one run reaches few sessions
    app = load_function("reconciler")
    short = ShortContext(remaining_ms=16_000)  # a deadline 11 s on: room for a session or two

    first = app.handler({}, short)
    assert first["not_reached"] > 0
    assert first["polled"] + first["not_reached"] == len(users)
    reached = set(polled_users(world))
    assert len(reached) == first["polled"]

    second = app.handler({}, short)
    now_reached = set(polled_users(world)) - reached
    # The sessions never polled go first: this run reached new ones, not the same again.
    assert len(now_reached) == min(second["polled"], len(users) - len(reached)) > 0

    world.sim.set_delay(0)
    while len(polled_users(world)) < len(users):
        app.handler({}, short)
    last = app.handler({}, FakeLambdaContext())
    assert last["not_reached"] == 0
    assert last["recovered"] == 0  # everything was recovered across the runs


def test_an_unconfirmed_update_not_announced_is_announced_by_a_later_run(
    world: World, events: EventCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.log_in("AB1234")
    world.day(orders=10, seed=8, forgeries=1)
    # EventBridge unreachable for this run only.
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", f"http://127.0.0.1:{closed_port()}")
    reset_caches()
    app = load_function("reconciler")
    with pytest.raises(app.ReconcileFailed, match="1 unconfirmed order update"):
        app.handler({}, FakeLambdaContext())
    assert events.of_type(UNCONFIRMED) == []

    monkeypatch.delenv("AWS_ENDPOINT_URL_EVENTBRIDGE")
    reset_caches()
    summary = app.handler({}, FakeLambdaContext())
    assert summary["unconfirmed"] == 1  # the claim was put back, and judged again
    assert len(events.of_type(UNCONFIRMED)) == 1
    assert app.handler({}, FakeLambdaContext())["unconfirmed"] == 0


def test_a_kite_failing_for_every_session_fails_each_one_and_not_the_run(world: World) -> None:
    for user_id in ("AB1234", "CD5678"):
        world.log_in(user_id)
    world.day(orders=10, seed=6, drop_share=0.5, users=["AB1234", "CD5678"])
    world.sim.set_html_errors(True)  # a proxy error page in place of Kite's JSON
    summary = reconcile()
    assert sorted(summary["failed"]) == ["AB1234", "CD5678"]
    assert (summary["polled"], summary["recovered"], summary["token_invalid"]) == (0, 0, [])
    assert world.session("AB1234")["status"] == "active"  # an error page is not a dead token
    # Tried: behind the sessions not tried yet next time, still ahead of those without open orders.
    assert set(polled_users(world)) == {"AB1234", "CD5678"}
    world.sim.set_html_errors(False)
    again = reconcile()
    assert again["failed"] == []
    assert again["polled"] == 2
    assert again["recovered"] > 0


def test_a_login_after_the_listing_is_polled_once_a_postback_of_its_user_is_recorded(world: World) -> None:
    app = load_function("reconciler")  # one warm container: it keeps the session listing
    world.log_in("AB1234")
    assert app.handler({}, FakeLambdaContext())["sessions"] == 1
    world.log_in("CD5678")
    world.log_in("EF9012")  # logged in, no order yet: waits for the next listing
    world.day(orders=8, seed=3, drop_share=0.5, users=["CD5678"])
    summary = app.handler({}, FakeLambdaContext())
    assert summary["sessions"] == 2
    assert summary["polled"] == 2
    assert summary["recovered"] > 0
    app._listing.clear()  # the listing's time is up
    assert app.handler({}, FakeLambdaContext())["sessions"] == 3


def test_an_ended_session_is_not_read_first_by_every_run(world: World) -> None:
    world.log_in("AB1234")
    world.log_in("CD5678")
    world.sim.kill_access_tokens(user_id="CD5678")
    ended = {**world.session("CD5678"), "status": "expired", "access_token": ""}
    boto3.client("secretsmanager").put_secret_value(
        SecretId=f"{world.prefix}/CD5678", SecretString=json.dumps(ended)
    )
    summary = reconcile()
    assert (summary["polled"], summary["inactive"]) == (1, 1)
    polls = polled_users(world)
    assert set(polls) == {"AB1234", "CD5678"}  # the ended one is recorded too: it goes to the back
    # A new session, never polled, comes before both.
    records = PollRecords(boto3.client("dynamodb"), world.stack["OrderLedgerTable"]["Ref"]).load()
    assert polling_order(["AB1234", "CD5678", "EF9012"], records, {})[0] == "EF9012"


@pytest.mark.parametrize("fault", ["hang", "trickle"])
def test_a_kite_that_hangs_or_trickles_still_gets_an_answer_before_the_timeout(
    world: World, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    world.log_in("AB1234")
    world.log_in("CD5678")
    endpoint = HangingEndpoint() if fault == "hang" else TricklingEndpoint(interval=0.5)
    with endpoint:
        monkeypatch.setenv("KITE_API_ROOT", endpoint.url)
        reset_caches()
        started = time.monotonic()
        summary: dict[str, Any] = load_function("reconciler").handler({}, ShortContext(remaining_ms=20_000))
        elapsed = time.monotonic() - started
    # The answer (and its log line and metrics) before Lambda's 20 s would run out.
    assert elapsed < 20
    assert summary["polled"] == 0
    assert len(summary["failed"]) + summary["not_reached"] == 2
    assert summary["recovered"] == 0
