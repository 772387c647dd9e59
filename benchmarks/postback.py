"""Postback path benchmarks (``make bench``).

1. Cold start: the postback function's init (import of its handler module, as Lambda does it)
   against the floor ``import boto3; boto3.client("sqs")``, each in fresh interpreters, runs
   interleaved, medians compared. The goal is a ratio within 1.15.
2. First request and warm requests: the handler invoked in one process against a moto server
   running in another process over HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "kitehooks"
CODE_URI = ROOT / "functions" / "postback"
RUNS = int(os.environ.get("BENCH_COLD_RUNS", "21"))
WARM_REQUESTS = int(os.environ.get("BENCH_WARM_REQUESTS", "200"))
GOAL = 1.15

FLOOR = "import boto3\nboto3.client('sqs')\n"
POSTBACK_INIT = f"import sys\nsys.path[:0] = [{str(CODE_URI)!r}, {str(LAYER)!r}]\nimport app\n"


def timed_child(code: str) -> float:
    """Milliseconds the code takes in a new interpreter (its own start-up excluded)."""
    wrapper = (
        "import time\n_start = time.perf_counter()\n"
        + code
        + "print((time.perf_counter() - _start) * 1000)\n"
    )
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "ap-south-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", wrapper],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(result.stdout.strip().splitlines()[-1])


def cold_start() -> dict[str, float]:
    floor: list[float] = []
    postback: list[float] = []
    timed_child(FLOOR)  # warm the OS file cache once, for both alike
    for _ in range(RUNS):
        floor.append(timed_child(FLOOR))
        postback.append(timed_child(POSTBACK_INIT))
    return {"floor_ms": statistics.median(floor), "postback_ms": statistics.median(postback)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def warm_requests() -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        os.environ.update(
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
            AWS_DEFAULT_REGION="ap-south-1",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            POWERTOOLS_SERVICE_NAME="kitehooks",
            POWERTOOLS_METRICS_NAMESPACE="kitehooks",
            POWERTOOLS_LOG_LEVEL="WARNING",
        )
        sys.path[:0] = [str(ROOT), str(LAYER), str(CODE_URI)]
        from local.provision import provision
        from local.samples import http_api_event, postback_body

        secret = "bench-secret"
        stack = provision(
            ROOT / "template.yaml",
            stack_name=f"bench{uuid.uuid4().hex[:6]}",
            secret_values={"ApiCredentialsSecret": json.dumps({"api_key": "bench", "api_secret": secret})},
        )
        os.environ.update(
            ORDER_UPDATES_QUEUE_URL=stack["OrderUpdatesQueue"]["Ref"],
            UNDELIVERED_BUCKET=stack["UndeliveredPostbacksBucket"]["Ref"],
            API_CREDENTIALS_SECRET_ID=stack["ApiCredentialsSecret"]["Ref"],
        )

        class Context:
            function_name = "bench"
            memory_limit_in_mb = 512
            invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:bench"
            aws_request_id = "bench"

        start = time.perf_counter()
        import app  # type: ignore[import-not-found]  # the function folder, put on sys.path above

        events = [
            http_api_event("POST", "/postback", postback_body(secret, order_id=f"2203030{i:08d}"))
            for i in range(WARM_REQUESTS + 1)
        ]
        sink = open(os.devnull, "w")  # noqa: SIM115 - Metrics prints EMF lines to stdout
        real_stdout, sys.stdout = sys.stdout, sink
        try:
            first = app.handler(events[0], Context())
            first_ms = (time.perf_counter() - start) * 1000
            timings = []
            for event in events[1:]:
                began = time.perf_counter()
                response = app.handler(event, Context())
                timings.append((time.perf_counter() - began) * 1000)
                assert response["statusCode"] == 200, response
        finally:
            sys.stdout = real_stdout
        assert first["statusCode"] == 200, first
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("requests", "pydantic"))
        timings.sort()
        return {
            "first_request_ms": first_ms,
            "warm_median_ms": statistics.median(timings),
            "warm_p95_ms": timings[int(len(timings) * 0.95) - 1],
            "heavy_modules_loaded": float(len(heavy)),
        }
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> int:
    print(f"cold start: {RUNS} interleaved runs each, fresh interpreters (python {sys.version.split()[0]})")
    cold = cold_start()
    ratio = cold["postback_ms"] / cold["floor_ms"]
    verdict = "ok" if ratio <= GOAL else "OVER GOAL"
    print(f"  floor  import boto3; boto3.client('sqs')   median {cold['floor_ms']:7.1f} ms")
    print(f"  postback function init (import app)       median {cold['postback_ms']:7.1f} ms")
    print(f"  ratio {ratio:.3f} (goal <= {GOAL}): {verdict}")
    warm = warm_requests()
    print(f"requests against a moto server over HTTP ({WARM_REQUESTS} warm):")
    print(f"  first request (app import + secret read)  {warm['first_request_ms']:7.1f} ms (boto3 loaded)")
    print(
        f"  warm per request                          median {warm['warm_median_ms']:6.2f} ms, "
        f"p95 {warm['warm_p95_ms']:6.2f} ms"
    )
    print(f"  requests/pydantic modules loaded: {int(warm['heavy_modules_loaded'])}")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
