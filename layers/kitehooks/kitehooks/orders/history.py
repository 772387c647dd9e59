"""Reading Kite's history of one order: which of its states a consumer still has to see, and
whether a postback's claim is one of them.

Pure functions over what ``GET /orders/{order_id}`` returns (every state the order passed
through, oldest first) and what the ledger knows; the reconciler (:mod:`kitehooks.orders.reconcile`)
does the I/O around them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from kitehooks.clock import kite_time
from kitehooks.orders.ledger import Claim
from kitehooks.orders.states import OrderState, state_of_order

Verdict = Literal["confirmed", "unconfirmed", "wait"]


def entry_time(entry: Mapping[str, Any]) -> datetime | None:
    """When Kite reached this state: the exchange's update time when there is one, else Kite's own."""
    return kite_time(entry.get("exchange_update_timestamp")) or kite_time(entry.get("order_timestamp"))


@dataclass(frozen=True, slots=True)
class HistoryState:
    """One update state of an order, with the last history entry that shows it (its order object)."""

    state: OrderState
    entry: Mapping[str, Any]
    at: datetime | None


def update_states(history: Iterable[Mapping[str, Any]]) -> list[HistoryState]:
    """The distinct update states (OPEN, COMPLETE, CANCELLED, REJECTED with their filled_quantity)
    in order of first appearance. Transient passages (VALIDATION PENDING, MODIFY PENDING, ...) are
    left out: Kite posts none of them. A state seen again (a modification leaves the order OPEN
    with the same filled_quantity) keeps its place and takes the later entry, the fuller object."""
    found: dict[str, HistoryState] = {}
    for entry in history:
        state = state_of_order(entry)
        if state is None or not state.is_update:
            continue
        found[state.key] = HistoryState(state, entry, entry_time(entry))
    return list(found.values())


def to_recover(
    history: Sequence[Mapping[str, Any]], delivered: frozenset[str], now: datetime, grace: timedelta
) -> tuple[list[HistoryState], bool]:
    """The states to send, in order, and whether one was left for a later run (too recent).

    Every state after the last one already delivered, oldest first; states before it are
    superseded and never sent (a consumer must never see an order go back). A state whose Kite
    time is within ``grace`` of ``now`` may still have its postback in flight: it and everything
    after it wait for a later run.
    """
    states = update_states(history)
    last_delivered = max((i for i, found in enumerate(states) if found.state.key in delivered), default=-1)
    sends: list[HistoryState] = []
    for found in states[last_delivered + 1 :]:
        if found.at is None or found.at > now - grace:
            return sends, True
        sends.append(found)
    return sends, False


def judge(claim: Claim, history: Sequence[Mapping[str, Any]]) -> Verdict:
    """A verified postback's claim against Kite's history of its order.

    Confirmed when the history shows the claimed state. Unconfirmed when it does not, yet the
    history has already reached the postback's signed ``order_timestamp``: Kite has moved to or
    past the time of the claim without ever being in that state. Otherwise it waits: Kite's
    history may not show the state yet.
    """
    seen = {state.key for state in (state_of_order(entry) for entry in history) if state is not None}
    if claim.state_key in seen:
        return "confirmed"
    claimed_at = kite_time(claim.order_timestamp)
    # Like with like: the claim's time is Kite's order_timestamp, which moves with every state.
    times = [
        at
        for at in (kite_time(entry.get("order_timestamp")) or entry_time(entry) for entry in history)
        if at is not None
    ]
    latest = max(times, default=None)
    if latest is None:
        return "wait"
    if claimed_at is None:
        # A signed timestamp that is not Kite's format: judge it once the order is done moving.
        final = state_of_order(history[-1])
        return "unconfirmed" if final is not None and final.is_final else "wait"
    return "unconfirmed" if latest >= claimed_at else "wait"
