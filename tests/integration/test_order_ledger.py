"""The order ledger against the template's OrderLedgerTable in a moto server over HTTP."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config

from kitehooks.clock import IST
from kitehooks.orders import ledger as ledger_module
from kitehooks.orders.ledger import Claim, LedgerOrder, LedgerUnavailable, OrderLedger
from kitehooks.orders.states import OrderState
from kitehooks.postbacks.postback import VerifiedPostback, parse_postback, verify_postback
from local.provision import ResourceValues
from local.samples import postback_body
from tests.conftest import TEST_API_SECRET, closed_port
from tests.faults import FailingEndpoint, HangingEndpoint

USER = "AB1234"
ORDER = "251130000070001"
TIMESTAMP = "2026-11-30 10:15:02"
# Fixed, within one IST trading day.
MORNING = datetime(2026, 11, 30, 10, 15, 5, tzinfo=IST)


@pytest.fixture
def ledger(stack: ResourceValues) -> OrderLedger:
    return OrderLedger(boto3.client("dynamodb"), stack["OrderLedgerTable"]["Ref"])


def postback(**fields: Any) -> VerifiedPostback:
    fields = {"user_id": USER, "order_id": ORDER, "order_timestamp": TIMESTAMP, **fields}
    return verify_postback(parse_postback(postback_body(TEST_API_SECRET, **fields), 65536), TEST_API_SECRET)


def item(stack: ResourceValues, user_id: str, order_id: str) -> dict[str, Any]:
    return (
        boto3.client("dynamodb")
        .get_item(
            TableName=stack["OrderLedgerTable"]["Ref"],
            Key={"pk": {"S": f"orders#{user_id}"}, "sk": {"S": order_id}},
            ConsistentRead=True,
        )
        .get("Item", {})
    )


# --- the postback path's write ------------------------------------------------------------------


def test_a_postback_records_its_state_and_its_claim(ledger: OrderLedger, stack: ResourceValues) -> None:
    assert ledger.record_postback(postback(status="UPDATE", filled_quantity=3), MORNING)
    stored = item(stack, USER, ORDER)
    assert stored["delivered"] == {"SS": ["OPEN|3"]}  # UPDATE is the book's OPEN
    assert stored["claims"] == {"SS": [f"OPEN|3|{TIMESTAMP}"]}
    assert stored["day"] == {"S": "2026-11-30"}
    assert stored["touched_at"] == {"N": str(int(MORNING.timestamp()))}
    assert int(stored["expires_at"]["N"]) > int(datetime.now(IST).timestamp()) + 24 * 3600
    assert ledger.delivered(USER, ORDER) == {"OPEN|3"}


def test_a_postback_naming_no_state_writes_nothing(ledger: OrderLedger, stack: ResourceValues) -> None:
    assert not ledger.record_postback(postback(status="COMPLETE", filled_quantity="junk"), MORNING)
    assert item(stack, USER, ORDER) == {}


def test_writers_add_to_each_other_and_repeat_harmlessly(ledger: OrderLedger) -> None:
    ledger.record_postback(postback(status="OPEN", filled_quantity=0), MORNING)
    ledger.record_delivered(USER, ORDER, [OrderState(ORDER, "OPEN", 5), OrderState(ORDER, "COMPLETE", 10)])
    ledger.record_postback(postback(status="OPEN", filled_quantity=0), MORNING)  # Kite sent it twice
    assert ledger.delivered(USER, ORDER) == {"OPEN|0", "OPEN|5", "COMPLETE|10"}
    [order] = ledger.orders_of(USER).values()
    assert order.claims == {Claim("OPEN", 0, TIMESTAMP)}


def test_record_delivered_keeps_a_redriven_postbacks_claim(ledger: OrderLedger) -> None:
    claim = Claim("COMPLETE", 10, TIMESTAMP)
    ledger.record_delivered(USER, ORDER, [OrderState(ORDER, "COMPLETE", 10)], [claim])
    assert ledger.orders_of(USER) == {
        ORDER: LedgerOrder(ORDER, frozenset({"COMPLETE|10"}), frozenset({claim}))
    }


def test_record_delivered_with_no_state_writes_nothing(ledger: OrderLedger, stack: ResourceValues) -> None:
    ledger.record_delivered(USER, ORDER, [], [Claim("OPEN", 0, TIMESTAMP)])
    assert item(stack, USER, ORDER) == {}


def test_delivered_of_an_order_never_seen_is_empty(ledger: OrderLedger) -> None:
    assert ledger.delivered(USER, "251130000079999") == frozenset()


def test_a_postback_without_a_user_is_kept_apart(ledger: OrderLedger, stack: ResourceValues) -> None:
    ledger.record_postback(postback(user_id=None, status="COMPLETE", filled_quantity=1), MORNING)
    assert item(stack, "-", ORDER)["delivered"] == {"SS": ["COMPLETE|1"]}
    assert ledger.delivered(None, ORDER) == {"COMPLETE|1"}
    assert ledger.orders_of(USER) == {}


# --- the reconciler's reads ---------------------------------------------------------------------


def test_orders_of_is_one_users_orders_only(ledger: OrderLedger) -> None:
    ledger.record_postback(postback(status="OPEN", filled_quantity=0), MORNING)
    ledger.record_postback(
        postback(order_id="251130000070002", status="COMPLETE", filled_quantity=2), MORNING
    )
    ledger.record_postback(postback(user_id="ZX9999", status="OPEN", filled_quantity=0), MORNING)
    orders = ledger.orders_of(USER)
    assert set(orders) == {ORDER, "251130000070002"}
    assert orders["251130000070002"].delivered == {"COMPLETE|2"}
    assert set(ledger.orders_of("ZX9999")) == {ORDER}
    assert ledger.orders_of("NOBODY") == {}


def test_orders_of_reads_every_page(ledger: OrderLedger, stack: ResourceValues) -> None:
    # A Query page ends at 1 MB: 100 orders of ~12 KB each fill two.
    statuses = [f"OPEN{'X' * 300}" for _ in range(40)]
    for n in range(100):
        order_id = f"2511300008{n:05d}"
        states = [OrderState(order_id, status, filled) for filled, status in enumerate(statuses)]
        ledger.record_delivered(USER, order_id, states)
    first_page = boto3.client("dynamodb").query(
        TableName=stack["OrderLedgerTable"]["Ref"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"orders#{USER}"}},
    )
    assert "LastEvaluatedKey" in first_page  # the case is real: one page does not hold them all
    assert len(ledger.orders_of(USER)) == 100


def test_a_claim_that_cannot_be_read_is_left_out(ledger: OrderLedger, stack: ResourceValues) -> None:
    ledger.record_postback(postback(status="OPEN", filled_quantity=0), MORNING)
    boto3.client("dynamodb").update_item(
        TableName=stack["OrderLedgerTable"]["Ref"],
        Key={"pk": {"S": f"orders#{USER}"}, "sk": {"S": ORDER}},
        UpdateExpression="ADD claims :junk",
        ExpressionAttributeValues={":junk": {"SS": ["no claim", "OPEN|x|2026-11-30 10:00:00"]}},
    )
    assert ledger.orders_of(USER)[ORDER].claims == {Claim("OPEN", 0, TIMESTAMP)}


def test_a_forged_status_with_the_separator_is_still_judged(ledger: OrderLedger) -> None:
    # Kite signs neither status nor quantities: a forger may put "|" in the status. The claim must
    # still reach the reconciler, or the forgery would never raise its event.
    forged = postback(status="COMPLETE|999", filled_quantity=5)
    ledger.record_postback(forged, MORNING)
    [claim] = ledger.orders_of(USER)[ORDER].claims
    assert (claim.status, claim.filled_quantity, claim.order_timestamp) == ("UNRECOGNISED", 5, TIMESTAMP)
    assert ledger.settle_claim(USER, ORDER, claim)


def test_statuses_kite_never_uses_are_recorded_as_one_word_so_replays_cannot_grow_the_item(
    ledger: OrderLedger,
) -> None:
    for n in range(50):
        ledger.record_postback(postback(status="X" * 4000 + str(n), filled_quantity=5), MORNING)
    order = ledger.orders_of(USER)[ORDER]
    assert order.delivered == {"UNRECOGNISED|5"}
    assert {claim.status for claim in order.claims} == {"UNRECOGNISED"}
    # Kite's own statuses are kept as they are (UPDATE as the book's OPEN).
    ledger.record_postback(postback(status="UPDATE", filled_quantity=3), MORNING)
    assert "OPEN|3" in ledger.orders_of(USER)[ORDER].delivered


def test_an_unconfirmed_claim_takes_its_state_out_of_delivered(ledger: OrderLedger) -> None:
    ledger.record_postback(postback(status="COMPLETE", filled_quantity=10), MORNING)
    claim = Claim("COMPLETE", 10, TIMESTAMP)
    assert ledger.settle_claim(USER, ORDER, claim, unconfirmed=True)
    order = ledger.orders_of(USER)[ORDER]
    # Kite never said it: it must not count as the order's progress when the real one comes.
    assert (order.claims, order.delivered) == (frozenset(), frozenset())


# --- settling claims ----------------------------------------------------------------------------


def test_a_claim_is_settled_once(ledger: OrderLedger) -> None:
    ledger.record_postback(postback(status="COMPLETE", filled_quantity=1), MORNING)
    claim = Claim("COMPLETE", 1, TIMESTAMP)
    assert ledger.settle_claim(USER, ORDER, claim)
    assert not ledger.settle_claim(USER, ORDER, claim)
    order = ledger.orders_of(USER)[ORDER]
    assert order.claims == frozenset()
    assert order.delivered == {"COMPLETE|1"}  # settling judges the claim, not the delivery


def test_settling_a_claim_never_made_is_false(ledger: OrderLedger) -> None:
    assert not ledger.settle_claim(USER, "251130000079998", Claim("COMPLETE", 1, TIMESTAMP))
    ledger.record_postback(postback(status="COMPLETE", filled_quantity=1), MORNING)
    assert not ledger.settle_claim(USER, ORDER, Claim("COMPLETE", 2, TIMESTAMP))
    assert not ledger.settle_claim(USER, ORDER, Claim("COMPLETE", 1, "2026-11-30 10:15:03"))
    assert ledger.orders_of(USER)[ORDER].claims == {Claim("COMPLETE", 1, TIMESTAMP)}


def test_settling_one_claim_leaves_the_others(ledger: OrderLedger) -> None:
    ledger.record_postback(postback(status="OPEN", filled_quantity=0), MORNING)
    ledger.record_postback(postback(status="COMPLETE", filled_quantity=1), MORNING)
    assert ledger.settle_claim(USER, ORDER, Claim("OPEN", 0, TIMESTAMP))
    assert ledger.orders_of(USER)[ORDER].claims == {Claim("COMPLETE", 1, TIMESTAMP)}


@pytest.mark.parametrize("racers", [2, 8])
def test_racing_runs_settle_a_claim_for_exactly_one(
    ledger: OrderLedger, stack: ResourceValues, racers: int
) -> None:
    ledger.record_postback(postback(status="CANCELLED", filled_quantity=0), MORNING)
    claim = Claim("CANCELLED", 0, TIMESTAMP)
    start = threading.Barrier(racers)
    results: list[bool] = []
    errors: list[BaseException] = []

    def judge() -> None:
        # A client per thread, as two reconciler containers have.
        own = OrderLedger(boto3.client("dynamodb"), stack["OrderLedgerTable"]["Ref"])
        start.wait(timeout=10)
        try:
            results.append(own.settle_claim(USER, ORDER, claim))
        except BaseException as error:  # a thread's failure must fail the test, not vanish
            errors.append(error)

    threads = [threading.Thread(target=judge) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(results) == [False] * (racers - 1) + [True]


# --- users with recent postbacks ----------------------------------------------------------------


def test_users_with_postbacks_since(ledger: OrderLedger) -> None:
    ledger.record_postback(postback(status="OPEN", filled_quantity=0), MORNING)
    later = MORNING + timedelta(minutes=5)
    ledger.record_postback(postback(user_id="ZX9999", status="OPEN", filled_quantity=0), later)
    ledger.record_postback(postback(user_id=None, status="OPEN", filled_quantity=0), later)  # no user
    yesterday = MORNING - timedelta(days=1)
    ledger.record_postback(postback(user_id="YS0001", status="OPEN", filled_quantity=0), yesterday)

    assert ledger.users_with_postbacks_since(MORNING - timedelta(minutes=1)) == {USER, "ZX9999"}
    assert ledger.users_with_postbacks_since(MORNING) == {USER, "ZX9999"}  # at or after
    assert ledger.users_with_postbacks_since(MORNING + timedelta(seconds=1)) == {"ZX9999"}
    assert ledger.users_with_postbacks_since(later + timedelta(seconds=1)) == set()
    assert ledger.users_with_postbacks_since(yesterday - timedelta(minutes=1)) == {"YS0001"}


def test_an_order_is_dated_by_its_first_record_and_a_new_order_moves_its_user_forward(
    ledger: OrderLedger,
) -> None:
    ledger.record_postback(postback(status="OPEN", filled_quantity=0), MORNING)
    since = MORNING + timedelta(minutes=1)
    assert ledger.users_with_postbacks_since(since) == set()
    # A later state of the same order keeps the order's index entry as it was: no index write.
    ledger.record_delivered(USER, ORDER, [OrderState(ORDER, "COMPLETE", 1)], at=since)
    assert ledger.users_with_postbacks_since(since) == set()
    assert ledger.users_with_postbacks_since(MORNING) == {USER}
    # A new order of the user is what puts the user first again.
    ledger.record_delivered(USER, "260101000000999", [OrderState("260101000000999", "OPEN", 0)], at=since)
    assert ledger.users_with_postbacks_since(since) == {USER}


# --- DynamoDB unreachable -----------------------------------------------------------------------

# One short attempt: the point is what is raised and what it says, not how long it waits.
IMPATIENT = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=1, read_timeout=1)
TABLE_NAME = "kitehooks-secret-table-name"


def calls(ledger: OrderLedger) -> dict[str, Any]:
    claim = Claim("COMPLETE", 1, TIMESTAMP)
    return {
        "record_postback": lambda: ledger.record_postback(
            postback(status="COMPLETE", filled_quantity=1), MORNING
        ),
        "record_delivered": lambda: ledger.record_delivered(
            USER, ORDER, [OrderState(ORDER, "COMPLETE", 1)], [claim]
        ),
        "delivered": lambda: ledger.delivered(USER, ORDER),
        "orders_of": lambda: ledger.orders_of(USER),
        "settle_claim": lambda: ledger.settle_claim(USER, ORDER, claim),
        "users_with_postbacks_since": lambda: ledger.users_with_postbacks_since(MORNING),
    }


# A trickling endpoint is bounded by the caller's deadline, not here: see test_ledger_time_budget.
@pytest.mark.parametrize("fault", ["refuse", "hang", "fail"])
def test_an_unreachable_dynamodb_raises_ledger_unavailable_saying_no_value(aws_env: str, fault: str) -> None:
    with HangingEndpoint() as hanging, FailingEndpoint() as failing:
        endpoint = {
            "refuse": f"http://127.0.0.1:{closed_port()}",
            "hang": hanging.url,
            "fail": failing.url,
        }[fault]
        ledger = OrderLedger(boto3.client("dynamodb", endpoint_url=endpoint, config=IMPATIENT), TABLE_NAME)
        for name, call in calls(ledger).items():
            with pytest.raises(LedgerUnavailable) as raised:
                call()
            message = str(raised.value)
            assert message.startswith("DynamoDB "), (name, message)
            for value in (USER, ORDER, TIMESTAMP, TABLE_NAME, "COMPLETE|1", TEST_API_SECRET, "127.0.0.1"):
                assert value not in message, (name, message)


def test_a_refusal_names_the_error_code(aws_env: str, stack: ResourceValues) -> None:
    ledger = OrderLedger(boto3.client("dynamodb"), "kitehooks-no-such-table")
    with pytest.raises(LedgerUnavailable, match=r"\(ResourceNotFoundException\)$"):
        ledger.delivered(USER, ORDER)


def test_an_order_holds_a_bounded_number_of_claims_awaiting_judgement(
    ledger: OrderLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Quantities are not signed: replays with made-up ones must not grow the item without end.
    monkeypatch.setattr(ledger_module, "MAX_PENDING_CLAIMS", 5)
    for filled in range(5):
        ledger.record_postback(postback(status="OPEN", filled_quantity=filled), MORNING)
    with pytest.raises(LedgerUnavailable, match="ConditionalCheckFailed"):
        ledger.record_postback(postback(status="OPEN", filled_quantity=99), MORNING)
    order = ledger.orders_of(USER)[ORDER]
    assert len(order.claims) == 5
    assert "OPEN|99" not in order.delivered
    # Once the reconciler has judged some, the order takes claims again.
    assert ledger.settle_claim(USER, ORDER, Claim("OPEN", 0, TIMESTAMP))
    ledger.record_postback(postback(status="OPEN", filled_quantity=99), MORNING)
    assert "OPEN|99" in ledger.orders_of(USER)[ORDER].delivered


def test_an_unconfirmed_claim_leaves_a_genuine_claim_of_the_same_state_delivered(ledger: OrderLedger) -> None:
    # A forged COMPLETE (judged unconfirmed) and, recorded meanwhile, Kite's genuine one: the
    # genuine postback's state stays delivered, and its claim waits for its own judgement.
    ledger.record_postback(postback(status="COMPLETE", filled_quantity=10), MORNING)
    later = "2026-11-30 10:15:09"
    ledger.record_delivered(USER, ORDER, [OrderState(ORDER, "COMPLETE", 10)], [Claim("COMPLETE", 10, later)])
    assert ledger.settle_claim(USER, ORDER, Claim("COMPLETE", 10, TIMESTAMP), unconfirmed=True)
    order = ledger.orders_of(USER)[ORDER]
    assert order.delivered == {"COMPLETE|10"}
    assert order.claims == {Claim("COMPLETE", 10, later)}
