"""Reading one order's history (kitehooks.orders.history) and the order sessions are polled in
(kitehooks.orders.schedule): pure functions, each with its bad case beside the good one."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from kitehooks.clock import IST, kite_time
from kitehooks.orders.history import judge, to_recover, update_states
from kitehooks.orders.ledger import Claim
from kitehooks.orders.schedule import PollRecord, oldest_poll, polling_order

NOW = datetime(2026, 11, 30, 11, 0, 0, tzinfo=IST)
GRACE = timedelta(seconds=60)


def entry(status: str, filled: int, at: str, **more: Any) -> dict[str, Any]:
    return {
        "order_id": "251130000000001",
        "status": status,
        "filled_quantity": filled,
        "order_timestamp": at,
        "exchange_update_timestamp": None,
        **more,
    }


# Placement, a modification, a partial fill, completion: Kite's passages between update states.
HISTORY = [
    entry("PUT ORDER REQ RECEIVED", 0, "2026-11-30 10:00:00"),
    entry("VALIDATION PENDING", 0, "2026-11-30 10:00:00"),
    entry("OPEN PENDING", 0, "2026-11-30 10:00:01"),
    entry("OPEN", 0, "2026-11-30 10:00:01", quantity=10),
    entry("MODIFY VALIDATION PENDING", 0, "2026-11-30 10:01:00"),
    entry("MODIFY PENDING", 0, "2026-11-30 10:01:00"),
    entry("OPEN", 0, "2026-11-30 10:01:00", quantity=20),
    entry("OPEN", 5, "2026-11-30 10:02:00"),
    entry("COMPLETE", 20, "2026-11-30 10:03:00"),
]


def keys(found: list[Any]) -> list[str]:
    return [item.state.key for item in found]


def test_update_states_are_the_distinct_posted_states_in_order_of_first_appearance() -> None:
    states = update_states(HISTORY)
    assert keys(states) == ["OPEN|0", "OPEN|5", "COMPLETE|20"]
    assert states[0].entry["quantity"] == 20  # the modified order object, the fuller one
    assert states[1].at == datetime(2026, 11, 30, 10, 2, tzinfo=IST)


def test_only_the_states_after_the_last_one_delivered_are_recovered() -> None:
    assert keys(to_recover(HISTORY, frozenset(), NOW, GRACE)[0]) == ["OPEN|0", "OPEN|5", "COMPLETE|20"]
    assert keys(to_recover(HISTORY, frozenset({"OPEN|0"}), NOW, GRACE)[0]) == ["OPEN|5", "COMPLETE|20"]
    # OPEN|5 was dropped but COMPLETE arrived: OPEN|5 is superseded, never sent after COMPLETE.
    sends, waiting = to_recover(HISTORY, frozenset({"OPEN|0", "COMPLETE|20"}), NOW, GRACE)
    assert (sends, waiting) == ([], False)
    # A forged claim's state (not in the history) changes nothing.
    assert keys(to_recover(HISTORY, frozenset({"OPEN|0", "CANCELLED|0"}), NOW, GRACE)[0]) == [
        "OPEN|5",
        "COMPLETE|20",
    ]


def test_a_state_within_the_grace_and_all_after_it_wait() -> None:
    delivered = frozenset({"OPEN|0"})
    at = NOW.replace(hour=10, minute=2, second=30)  # OPEN|5 is 30 s old: its postback may be in flight
    assert to_recover(HISTORY, delivered, at, GRACE) == ([], True)
    sends, waiting = to_recover(HISTORY, delivered, at.replace(minute=3), GRACE)
    assert keys(sends) == ["OPEN|5"]  # COMPLETE, 30 s old, waits
    assert waiting
    sends, waiting = to_recover(HISTORY, delivered, NOW, GRACE)
    assert keys(sends) == ["OPEN|5", "COMPLETE|20"]
    assert not waiting


def test_the_exchange_time_wins_when_kite_gives_one() -> None:
    history = [entry("OPEN", 0, "2026-11-30 10:00:00", exchange_update_timestamp="2026-11-30 10:59:30")]
    assert to_recover(history, frozenset(), NOW, GRACE) == ([], True)
    assert keys(to_recover(history, frozenset(), NOW + GRACE, GRACE)[0]) == ["OPEN|0"]


def test_a_claim_in_the_history_is_confirmed_and_one_kite_moved_past_is_not() -> None:
    assert judge(Claim("OPEN", 5, "2026-11-30 10:02:00"), HISTORY) == "confirmed"
    assert judge(Claim("COMPLETE", 20, "2026-11-30 10:03:00"), HISTORY) == "confirmed"
    # Signed with a genuine order_timestamp, but Kite was never CANCELLED: a lie.
    assert judge(Claim("CANCELLED", 0, "2026-11-30 10:03:00"), HISTORY) == "unconfirmed"
    assert judge(Claim("OPEN", 7, "2026-11-30 10:02:00"), HISTORY) == "unconfirmed"
    # Kite's history has not reached the claim's time yet: wait, do not accuse.
    assert judge(Claim("COMPLETE", 30, "2026-11-30 10:05:00"), HISTORY) == "wait"
    assert judge(Claim("OPEN", 0, "2026-11-30 10:00:00"), []) == "wait"


def test_a_claim_with_a_timestamp_not_in_kites_format_is_judged_once_the_order_is_final() -> None:
    assert judge(Claim("CANCELLED", 0, "yesterday"), HISTORY) == "unconfirmed"
    assert judge(Claim("CANCELLED", 0, "yesterday"), HISTORY[:-1]) == "wait"


def test_kite_time_reads_kites_format_only() -> None:
    assert kite_time("2026-11-30 10:00:00") == datetime(2026, 11, 30, 10, tzinfo=IST)
    for bad in (None, "", "2026-11-30T10:00:00", 5):
        assert kite_time(bad) is None


def poll(user_id: str, at: int, open_orders: bool = False) -> PollRecord:
    return PollRecord(user_id, at, open_orders)


def test_sessions_with_open_orders_or_new_postbacks_come_first_then_the_least_recently_polled() -> None:
    polls = {
        "AA0001": poll("AA0001", 100),
        "BB0002": poll("BB0002", 50),
        "CC0003": poll("CC0003", 300, open_orders=True),
        "DD0004": poll("DD0004", 200),
    }
    touched = {"DD0004": 250, "AA0001": 100}  # AA0001's write is its own poll's: not after it
    order = polling_order(["AA0001", "BB0002", "CC0003", "DD0004", "EE0005"], polls, touched)
    assert order == ["EE0005", "DD0004", "CC0003", "BB0002", "AA0001"]


def test_a_run_full_of_urgent_sessions_still_gives_every_fourth_place_to_a_quiet_one() -> None:
    polls = {f"U{n:05d}": poll(f"U{n:05d}", 1_000, open_orders=True) for n in range(12)}
    polls |= {f"Q{n:05d}": poll(f"Q{n:05d}", 500 + n) for n in range(3)}
    order = polling_order(sorted(polls), polls, {})
    assert [user_id[0] for user_id in order] == list("UUUQUUUQUUUQUUUUUU"[: len(order)])
    assert [user_id for user_id in order if user_id.startswith("Q")] == ["Q00000", "Q00001", "Q00002"]


def test_no_quiet_session_starves_when_urgent_ones_fill_every_run() -> None:
    # 40 sessions always have open orders; 30 have none; a run reaches 12 sessions.
    polls = {f"U{n:05d}": poll(f"U{n:05d}", 0, open_orders=True) for n in range(40)}
    polls |= {f"Q{n:05d}": poll(f"Q{n:05d}", 0) for n in range(30)}
    reached: set[str] = set()
    for run in range(1, 11):
        for user_id in polling_order(sorted(polls), polls, {})[:12]:
            polls[user_id] = poll(user_id, run, open_orders=user_id.startswith("U"))
            reached.add(user_id)
    # Three quiet sessions a run: all 30 reached within ten runs.
    assert {user_id for user_id in reached if user_id.startswith("Q")} == {f"Q{n:05d}" for n in range(30)}


@pytest.mark.parametrize("polled", [[], ["AA0001"]])
def test_postbacks_are_looked_for_since_the_oldest_poll_and_never_before_the_day(polled: list[str]) -> None:
    day_start = NOW.replace(hour=0, minute=0)
    polls = {"AA0001": poll("AA0001", int((day_start + timedelta(hours=9)).timestamp()))}
    assert oldest_poll(polled, polls, day_start) == (day_start + timedelta(hours=9) if polled else day_start)
    stale = {"AA0001": poll("AA0001", int((day_start - timedelta(hours=9)).timestamp()))}
    assert oldest_poll(["AA0001"], stale, day_start) == day_start
