"""A wall-clock deadline per invocation, so every answer leaves before the function's Timeout.

botocore's and requests' timeouts bound each socket operation, not a call: an endpoint that
trickles one byte a second never trips a 3 s read timeout, and retries multiply the rest. So each
outbound call runs under :meth:`Deadline.limit`, which bounds the call's wall time with a
real-time interval timer (``SIGALRM``) that interrupts the blocked read in this thread.

Written by hand because no library bounds a blocking call's wall clock in the calling thread: a
worker thread with ``future.result(timeout=...)`` would leave the hung call running into the
container's next invocations, and would cost a thread hand-off on every warm request. Lambda runs
the handler in the main thread, the only one that receives signals; elsewhere (a thread of a
user's code) a limit falls back to the clients' own socket timeouts.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol


class DeadlineExceeded(BaseException):
    """The time for a call ran out.

    A ``BaseException``, like ``KeyboardInterrupt``: it must pass through libraries' ``except
    Exception`` blocks (botocore would otherwise treat it as a failed attempt and retry) up to
    the code that set the limit and knows what to answer instead.
    """


class RemainingTime(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


# What signal.signal takes and returns: the handler in place before a limit, put back after it.
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

# Absolute (monotonic) ends of the limits active in the main thread.
_active: list[float] = []


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    now = time.monotonic()
    expired = [index for index, end in enumerate(_active) if end <= now + 0.001]
    if expired:
        # The limit raised for (the innermost that ran out) is forgotten here, before raising:
        # however the unwinding goes (the timer can fire between a block's last line and its
        # clean-up), it can never fire again. An enclosing limit that ran out too stays, and
        # fires as soon as this exception has been handled, if it was.
        del _active[expired[-1]]
        _arm()
        raise DeadlineExceeded
    _arm()


def _arm() -> None:
    if _active:
        signal.setitimer(signal.ITIMER_REAL, max(min(_active) - time.monotonic(), 0.001))
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)


class _TimeLimit:
    """:func:`time_limit`'s context manager, a class rather than a ``@contextmanager`` generator:
    every warm postback enters one, and the generator machinery (twice, through
    :meth:`Deadline.limit`) took a third of its ~10 µs. Same steps, same order."""

    __slots__ = ("_end", "_previous_handler", "_seconds")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._end: float | None = None
        self._previous_handler: _Handler = None

    def __enter__(self) -> None:
        if self._seconds <= 0:
            raise DeadlineExceeded
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous_handler = signal.signal(signal.SIGALRM, _on_alarm)
        end = self._end = time.monotonic() + self._seconds
        _active.append(end)
        _arm()

    def __exit__(self, *exc_info: object) -> None:
        end = self._end
        if end is None:  # outside the main thread: nothing was set
            return
        if end in _active:  # not if the alarm already forgot it
            _active.remove(end)
        _arm()
        if not _active:
            signal.signal(signal.SIGALRM, self._previous_handler)


def time_limit(seconds: float) -> AbstractContextManager[None]:
    """Raise :class:`DeadlineExceeded` in the block if it runs longer than ``seconds``."""
    return _TimeLimit(seconds)


def reset() -> None:
    """Forget every limit and disarm the timer: an invocation starts and ends with none."""
    _active.clear()
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


@dataclass(frozen=True, slots=True)
class Deadline:
    """When this invocation must have its answer ready (a ``time.monotonic()`` instant)."""

    at: float

    @classmethod
    def from_context(
        cls, context: RemainingTime, margin_seconds: float, cap_seconds: float | None = None
    ) -> Deadline:
        """``margin_seconds`` before Lambda would stop the function (and at most ``cap_seconds``
        from now, for a caller such as API Gateway that gives up sooner)."""
        reset()
        available = context.get_remaining_time_in_millis() / 1000
        if cap_seconds is not None:
            available = min(available, cap_seconds)
        return cls(time.monotonic() + available - margin_seconds)

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def budget(self, most: float | None = None, keep: float = 0.0) -> float:
        """Seconds a step may take: at most ``most``, leaving ``keep`` for the steps after it, but
        never less than half of what is left (a short Timeout shrinks every step, not just this one)."""
        remaining = self.remaining()
        available = remaining - min(keep, remaining / 2)
        return available if most is None else min(most, available)

    def limit(self, most: float | None = None, keep: float = 0.0) -> AbstractContextManager[None]:
        """Bound the block by :meth:`budget`; raise :class:`DeadlineExceeded` when it runs out."""
        return _TimeLimit(self.budget(most, keep))
