"""Invoke one function's handler the way Lambda does, in a process of its own.

    python -I tests/lambda_child.py <CodeUri folder> <layer folder> <Timeout seconds> < event.json

Only the function's folder and the layer are importable (as in Lambda). The context's remaining
time counts down from the function's Timeout, starting at the invoke. The handler's own output
(logs, metrics) goes to stdout as in Lambda; the last line is ``RESULT {"response": ..., "seconds": ...}``,
or, when the handler is still running at its Timeout, ``TIMED OUT`` and the process ends as Lambda
would end it (the Timeout counts from the invoke, not from the interpreter's start).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
from typing import Any


class LambdaContext:
    function_name = "kitehooks-fault-test"
    function_version = "$LATEST"
    memory_limit_in_mb = "512"
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:kitehooks-fault-test"
    aws_request_id = "11111111-2222-3333-4444-555555555555"
    log_group_name = "/aws/lambda/kitehooks-fault-test"
    log_stream_name = "fault-test"
    identity: Any = None
    client_context: Any = None

    def __init__(self, timeout_seconds: float) -> None:
        self._ends_at = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._ends_at - time.monotonic()) * 1000), 0)


def main() -> int:
    code_uri, layer, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    sys.path[:0] = [code_uri, layer]
    event = json.load(sys.stdin)
    app = importlib.import_module("app")
    context = LambdaContext(timeout)

    def stop_at_timeout() -> None:
        print("TIMED OUT", flush=True)
        os._exit(3)

    # A thread, not a signal: the handler's own deadline uses SIGALRM.
    watchdog = threading.Timer(timeout, stop_at_timeout)
    watchdog.daemon = True
    started = time.monotonic()
    watchdog.start()
    response = app.handler(event, context)
    watchdog.cancel()
    seconds = time.monotonic() - started
    print("RESULT " + json.dumps({"response": response, "seconds": seconds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
