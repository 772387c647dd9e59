"""One whole first invocation, in this fresh interpreter, the way Lambda does it.

    python -I benchmarks/first_invocation.py <kind> <code folder> <layer folder> < event.json

``kind`` is ``floor-postback`` / ``floor-callback`` (only ``import boto3`` and the clients the
function needs), ``baseline`` (benchmarks/baseline_postback.py) or ``function`` (the folder's
``app.handler``). Timed from just before the import to the first answer: the interpreter's own
start-up is the same for every kind and left out. Prints one JSON line: wall and CPU milliseconds,
the answer's status, and whether ``requests`` or pydantic got loaded.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


class Context:
    function_name = "kitehooks-bench"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:kitehooks-bench"
    aws_request_id = "11111111-2222-3333-4444-555555555555"

    def get_remaining_time_in_millis(self) -> int:
        return 28_000


def main() -> int:
    kind, code_uri, layer = sys.argv[1], sys.argv[2], sys.argv[3]
    event: dict[str, Any] = json.load(sys.stdin)
    sys.path[:0] = [code_uri, layer]
    real_stdout = sys.stdout
    sink = open(os.devnull, "w")  # noqa: SIM115 - the functions' log lines, as Lambda's stdout
    sys.stdout = sink
    wall, cpu = time.perf_counter(), time.process_time()
    status = 0
    if kind == "floor-postback":
        import boto3

        boto3.client("sqs")
    elif kind == "floor-callback":
        import boto3

        boto3.client("secretsmanager")
        boto3.client("dynamodb")
    else:
        import importlib

        module = importlib.import_module("baseline_postback" if kind == "baseline" else "app")
        status = int(module.handler(event, Context())["statusCode"])
    wall_ms = (time.perf_counter() - wall) * 1000
    cpu_ms = (time.process_time() - cpu) * 1000
    sys.stdout = real_stdout
    heavy = sorted({name.split(".")[0] for name in sys.modules} & {"requests", "pydantic"})
    print(json.dumps({"wall_ms": wall_ms, "cpu_ms": cpu_ms, "status": status, "heavy_modules": heavy}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
