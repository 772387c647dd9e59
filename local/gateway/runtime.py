"""What runs inside a worker process: Lambda's Python runtime for one function, locally.

Standard library only: a worker loads this file by path (workers.py), so nothing but the
function's CodeUri and layer folders joins its sys.path."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback
from typing import Any


class LocalLambdaContext:
    """The context object of Lambda's Python runtime, with the same attributes and types
    (``memory_limit_in_mb`` is a string there too)."""

    def __init__(self, aws_request_id: str, invoked_function_arn: str, deadline_ms: int) -> None:
        self.aws_request_id = aws_request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity: Any = None
        self.client_context: Any = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def worker_main(config_json: str) -> int:
    """A worker process: load one function's handler, then invoke it for each request line.

    Requests arrive as JSON lines on stdin, results leave as JSON lines on stdout. The handler gets
    neither: its stdin is empty and its stdout is the gateway's console (stderr), as its logs are.
    """
    config = json.loads(config_json)
    requests_in = os.fdopen(os.dup(0), "rb")
    results_out = os.fdopen(os.dup(1), "wb")
    empty = os.open(os.devnull, os.O_RDONLY)
    os.dup2(empty, 0)
    os.close(empty)
    os.dup2(2, 1)
    # Ctrl-C reaches the whole process group; the gateway stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path[:0] = [config["code_uri"], *config["layers"]]

    def send(line: str) -> None:
        results_out.write(line.encode("utf-8") + b"\n")
        results_out.flush()

    module_name, _, function_name = str(config["handler"]).rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception:
        traceback.print_exc()
        send(json.dumps({"ready": False}))
        return 1
    send(json.dumps({"ready": True}))
    for line in requests_in:
        request = json.loads(line)
        context = LocalLambdaContext(
            request["aws_request_id"], config["function_arn"], request["deadline_ms"]
        )
        try:
            # Serialised here, so a result that is not JSON counts as the handler's error.
            reply = json.dumps({"result": handler(request["event"], context)})
        except Exception as error:
            traceback.print_exc()
            reply = json.dumps({"error": type(error).__name__, **_error_detail(error)})
        send(reply)
    return 0


def _error_detail(error: BaseException) -> dict[str, Any]:
    """What Lambda's Invoke API answers about a handler's exception: its message and stack."""
    try:
        message = str(error)
    except Exception:
        message = ""
    return {"message": message, "stack": traceback.format_tb(error.__traceback__)}
