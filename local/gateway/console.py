"""The gateway's console: one line at a time from any thread (stderr, as sam local's)."""

from __future__ import annotations

import sys
import threading

_console_lock = threading.Lock()


def _console(message: str) -> None:
    with _console_lock:
        print(message, file=sys.stderr, flush=True)
