"""The wall-clock limits every outbound call runs under (kitehooks.deadline)."""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from kitehooks import deadline
from kitehooks.deadline import Deadline, DeadlineExceeded, time_limit


@pytest.fixture(autouse=True)
def no_limits_left_behind() -> None:
    deadline.reset()


def _timer_armed() -> bool:
    return signal.getitimer(signal.ITIMER_REAL)[0] > 0


def _spin_until(moment: float) -> None:
    while time.monotonic() < moment:
        pass


def test_a_block_that_overruns_its_limit_is_interrupted_near_the_limit() -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded), time_limit(0.2):
        time.sleep(5)
    assert 0.19 <= time.monotonic() - started < 0.5
    assert not _timer_armed()
    assert signal.getsignal(signal.SIGALRM) is not deadline._on_alarm  # the handler is put back


def test_a_block_within_its_limit_runs_to_the_end_and_leaves_no_timer() -> None:
    with time_limit(1.0):
        time.sleep(0.05)
    assert not _timer_armed()
    assert deadline._active == []


def test_no_time_left_raises_before_the_block_starts() -> None:
    ran = False
    with pytest.raises(DeadlineExceeded), time_limit(0):
        ran = True
    assert not ran


def test_the_inner_limit_fires_first_and_the_outer_one_later() -> None:
    started = time.monotonic()
    inner_caught_after: list[float] = []

    def step() -> None:
        with time_limit(0.4):
            try:
                with time_limit(0.1):
                    time.sleep(5)
            except DeadlineExceeded:
                inner_caught_after.append(time.monotonic() - started)
            time.sleep(5)

    with pytest.raises(DeadlineExceeded):
        step()
    assert inner_caught_after
    assert inner_caught_after[0] < 0.3
    assert 0.39 <= time.monotonic() - started < 0.7
    assert not _timer_armed()


def test_an_outer_limit_sooner_than_the_inner_one_still_holds() -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded), time_limit(0.1), time_limit(5):
        time.sleep(5)
    assert time.monotonic() - started < 0.4


def test_outside_the_main_thread_a_limit_leaves_the_block_alone() -> None:
    outcome: list[str] = []

    def worker() -> None:
        with time_limit(0.05):
            time.sleep(0.15)
        outcome.append("finished")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert outcome == ["finished"]


def test_a_limit_that_runs_out_as_its_block_ends_never_fires_again() -> None:
    """The timer may fire between a block's last line and its clean-up. Whichever way that goes,
    no expired limit may stay behind to interrupt a later, healthy step (it once did, 1 ms
    into the next limit, and could lose a postback whose S3 copy was on its way)."""
    rng = random.Random(7)  # noqa: S311 - jitter, not secrets
    for _ in range(1000):
        limit = 0.002
        try:
            with time_limit(limit):
                _spin_until(time.monotonic() + limit + rng.uniform(-30e-6, 30e-6))
        except DeadlineExceeded:
            pass
        assert deadline._active == []
        assert not _timer_armed()
    with time_limit(1.0):
        time.sleep(0.2)  # a healthy step after all that


def test_budget_keeps_time_for_later_steps_but_never_more_than_half() -> None:
    plenty = Deadline.after(25.0)
    assert plenty.budget(7.0, keep=5.0) == pytest.approx(7.0)
    assert plenty.budget(keep=5.0) == pytest.approx(20.0, abs=0.05)
    short = Deadline.after(4.0)
    assert short.budget(7.0, keep=5.0) == pytest.approx(2.0, abs=0.05)  # not -1: half of 4 s


def test_from_context_takes_the_margin_off_the_remaining_time_and_caps_it() -> None:
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 28_000

    assert Deadline.from_context(Context(), 2.5).remaining() == pytest.approx(25.5, abs=0.05)
    assert Deadline.from_context(Context(), 2.0, cap_seconds=10).remaining() == pytest.approx(8.0, abs=0.05)


def test_the_alarm_forgets_a_limit_before_raising_for_it() -> None:
    """What makes the race above harmless, checked directly: the timer's handler, run at any
    point after a limit ran out (even in the limit's own clean-up), removes it first."""
    now = time.monotonic()
    deadline._active[:] = [now + 10.0, now - 0.01]  # an outer limit still running, one run out
    with pytest.raises(DeadlineExceeded):
        deadline._on_alarm(signal.SIGALRM, None)
    assert deadline._active == [now + 10.0]
    deadline._on_alarm(signal.SIGALRM, None)  # woken again early: nothing has run out
    assert deadline._active == [now + 10.0]
    assert _timer_armed()  # for the limit still running


def test_an_enclosing_limit_that_ran_out_still_fires_after_the_inner_one_was_handled() -> None:
    started = time.monotonic()

    def step() -> None:
        with time_limit(0.2):
            try:
                with time_limit(0.2):
                    time.sleep(5)
            except DeadlineExceeded:
                pass  # the inner step gave up; the enclosing one has no time left either
            time.sleep(5)

    with pytest.raises(DeadlineExceeded):
        step()
    assert time.monotonic() - started < 0.5
    assert deadline._active == []
    assert not _timer_armed()
