"""The example consumer at the end of a whole day on real parts: the Kite simulator's orders, their
postbacks (a share dropped, some duplicated) through the postback function on the local gateway,
the real reconciler recovering what was dropped, then the queue drained batch by batch through the
consumer as Lambda would. The user's logic sees each order's states once, in order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.kite_simulator import KiteSimulator
from local.provision import ResourceValues
from tests.conftest import ROOT, FakeLambdaContext, load_function
from tests.integration.test_consumer import Consumer
from tests.integration.test_reconciler import World, expected_sequences, world_with


@pytest.fixture
def world(
    stack: ResourceValues, sim: KiteSimulator, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    yield from world_with(stack, sim, moto_endpoint, monkeypatch, "on")


@pytest.fixture
def consumer(world: World, monkeypatch: pytest.MonkeyPatch) -> Consumer:
    monkeypatch.setenv("IDEMPOTENCY_TABLE", world.stack["ConsumerIdempotencyTable"]["Ref"])
    monkeypatch.syspath_prepend(str(ROOT / "functions" / "consumer"))
    return Consumer(load_function("consumer"), world.stack)


def test_after_drops_and_reconciliation_the_users_logic_sees_each_state_once_in_order(
    world: World, consumer: Consumer
) -> None:
    world.log_in("AB1234")
    day = world.day(orders=20, seed=7, drop_share=0.3, duplicates=2)
    assert [p.outcome for p in day.postbacks].count("dropped") > 0, day.summary()
    summary = load_function("reconciler").handler({"source": "test"}, FakeLambdaContext())
    assert summary["recovered"] > 0
    assert summary["failed"] == []

    while True:  # as Lambda polls: batch after batch until the queue is empty
        event, response = consumer.run_once()
        if not event["Records"]:
            break
        assert response == {"batchItemFailures": []}

    seen: dict[str, list[str]] = {}
    for handled in consumer.handled:
        seen.setdefault(handled.order_id, []).append(f"{handled.status}|{handled.filled_quantity}")
    expected = expected_sequences(world, day)
    assert {order_id: seen.get(order_id, []) for order_id in expected} == expected
    sources = {handled.source for handled in consumer.handled}
    assert sources == {"postback", "reconciler"}
    # Recovered states carry nothing signed; postbacks their two signed fields.
    assert {h.signed_fields for h in consumer.handled if h.source == "reconciler"} == {()}
    assert {h.signed_fields for h in consumer.handled if h.source == "postback"} == {
        ("order_id", "order_timestamp")
    }
