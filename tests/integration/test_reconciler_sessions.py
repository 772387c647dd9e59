"""The reconciler across sessions and under Kite's limits: a dead token ends that session (through
SessionFunction's check on the local gateway) and not the run; Kite's 429 is waited out; two runs
at once send nothing twice and announce an unconfirmed update once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kitehooks.deadline import Deadline
from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues
from tests.conftest import FakeLambdaContext, load_function
from tests.integration.test_reconciler import (
    UNCONFIRMED,
    EventCapture,
    World,
    event_capture,
    expected_sequences,
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
    yield from event_capture()


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
    [ended] = [e for e in events.drain() if e["detail-type"] == "Kite session ended"]
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
