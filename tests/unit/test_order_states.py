"""Order states: what "the same order update" means for every source that carries one."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from kitehooks.orders import queue
from kitehooks.orders.states import (
    OrderState,
    key_of,
    order_state,
    parse_key,
    quantity,
    state_of_order,
)
from kitehooks.postbacks.postback import VerifiedPostback, parse_postback, verify_postback
from local.samples import KITE_POSTBACK_EXAMPLE, postback_body

SECRET = "states-test-secret"
ORDER_ID = "251130000012345"


def verified(**fields: Any) -> VerifiedPostback:
    return verify_postback(parse_postback(postback_body(SECRET, order_id=ORDER_ID, **fields), 65536), SECRET)


def order_object(**fields: Any) -> dict[str, Any]:
    """An order as GET /orders returns it: Kite's order fields, no checksum."""
    order = {key: value for key, value in KITE_POSTBACK_EXAMPLE.items() if key != "checksum"}
    return {**order, "order_id": ORDER_ID, **fields}


# --- statuses ----------------------------------------------------------------------------------


def test_a_postbacks_update_is_the_books_open() -> None:
    state = order_state(ORDER_ID, "UPDATE", 3)
    assert state == OrderState(ORDER_ID, "OPEN", 3)
    assert state is not None
    assert state.is_update
    assert not state.is_final
    assert key_of("UPDATE", 3) == key_of("OPEN", 3) == "OPEN|3"


@pytest.mark.parametrize("status", ["COMPLETE", "CANCELLED", "REJECTED"])
def test_final_statuses_are_updates_and_final(status: str) -> None:
    state = order_state(ORDER_ID, status, 0)
    assert state is not None
    assert state.is_update
    assert state.is_final


@pytest.mark.parametrize(
    "status", ["VALIDATION PENDING", "MODIFY PENDING", "PUT ORDER REQ RECEIVED", "TRIGGER PENDING"]
)
def test_kites_transient_statuses_are_no_update(status: str) -> None:
    state = order_state(ORDER_ID, status, 0)
    assert state is not None
    assert not state.is_update
    assert not state.is_final


def test_a_status_is_never_guessed() -> None:
    assert order_state(ORDER_ID, None, 1) is None
    assert order_state(ORDER_ID, "", 1) is None
    # Only UPDATE is renamed; the book's own spelling is kept as it is.
    assert order_state(ORDER_ID, "update", 1) == OrderState(ORDER_ID, "update", 1)


# --- quantities --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (25, 25),
        ("25", 25),
        ("0", 0),
        (25.0, 25),
        ("9" * 12, 10**12 - 1),
    ],
)
def test_quantities_as_kite_sends_them(value: Any, expected: int) -> None:
    assert quantity(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        -1,
        "-1",
        "",
        " 5",
        "5 ",
        "2.5",
        2.5,
        -3.0,
        "1e3",
        "٣",  # an Arabic-Indic digit: str.isdigit says yes, Kite never sends it
        "9" * 13,
        [],
        {},
        "five",
    ],
)
def test_junk_is_no_quantity(value: Any) -> None:
    assert quantity(value) is None
    assert order_state(ORDER_ID, "OPEN", value) is None


# --- keys --------------------------------------------------------------------------------------


def test_keys_round_trip() -> None:
    state = OrderState(ORDER_ID, "CANCELLED", 7)
    assert state.key == "CANCELLED|7"
    assert parse_key(state.key) == ("CANCELLED", 7)


def test_a_status_with_spaces_keeps_its_key() -> None:
    assert parse_key("TRIGGER PENDING|0") == ("TRIGGER PENDING", 0)


@pytest.mark.parametrize("key", ["", "OPEN", "OPEN|", "|5", "OPEN|x", "OPEN|-1", "OPEN|2.5"])
def test_keys_that_are_no_state(key: str) -> None:
    assert parse_key(key) is None


# --- deduplication ids -------------------------------------------------------------------------


def test_the_deduplication_id_is_sha256_of_the_state() -> None:
    # The documented formula, fixed: a change splits one state into two messages across a deploy.
    expected = hashlib.sha256(f"{ORDER_ID}|COMPLETE|1".encode()).hexdigest()
    assert OrderState(ORDER_ID, "COMPLETE", 1).deduplication_id == expected
    assert order_state(ORDER_ID, "COMPLETE", "1") == OrderState(ORDER_ID, "COMPLETE", 1)


def test_different_states_have_different_ids() -> None:
    ids = {
        OrderState(ORDER_ID, "OPEN", 0).deduplication_id,
        OrderState(ORDER_ID, "OPEN", 5).deduplication_id,
        OrderState(ORDER_ID, "COMPLETE", 5).deduplication_id,
        OrderState("251130000012346", "OPEN", 0).deduplication_id,
    }
    assert len(ids) == 4


def test_a_postback_and_the_books_order_object_of_one_state_share_an_id() -> None:
    postback = verified(status="UPDATE", filled_quantity=3, guid="g-update")
    book = state_of_order(order_object(status="OPEN", filled_quantity=3))
    assert book is not None
    assert postback.state == book
    assert queue.deduplication_id(postback) == book.deduplication_id


def test_byte_different_postbacks_of_one_state_share_an_id() -> None:
    first = verified(status="CANCELLED", filled_quantity=0, exchange_update_timestamp="2026-11-30 10:00:00")
    second = verified(status="CANCELLED", filled_quantity=0, exchange_update_timestamp="2026-11-30 10:00:01")
    assert first.raw_body != second.raw_body
    assert queue.deduplication_id(first) == queue.deduplication_id(second)


def test_a_quantity_as_text_is_the_same_state_as_the_number() -> None:
    as_number = verified(status="COMPLETE", filled_quantity=10)
    as_text = verified(status="COMPLETE", filled_quantity="10")
    assert queue.deduplication_id(as_number) == queue.deduplication_id(as_text)


def test_another_fill_is_another_message() -> None:
    assert queue.deduplication_id(verified(status="UPDATE", filled_quantity=3)) != queue.deduplication_id(
        verified(status="UPDATE", filled_quantity=4)
    )


def test_a_postback_naming_no_state_falls_back_to_its_bytes() -> None:
    without = verified(status="COMPLETE", filled_quantity="junk")
    assert without.state is None
    other = verified(status="COMPLETE", filled_quantity="junk", guid="other")
    assert queue.deduplication_id(without) != queue.deduplication_id(other)
    assert len(queue.deduplication_id(without)) == 64


def test_state_of_order_refuses_what_is_no_order() -> None:
    assert state_of_order({}) is None
    assert state_of_order(order_object(order_id="")) is None
    assert state_of_order(order_object(order_id=12345)) is None
    assert state_of_order(order_object(status=None)) is None
    assert state_of_order(order_object(filled_quantity=None)) is None
    assert state_of_order(json.loads(json.dumps(order_object(status="COMPLETE", filled_quantity=1)))) == (
        OrderState(ORDER_ID, "COMPLETE", 1)
    )
