"""``make bench``: the postback path side by side with a minimal baseline, in one run, in both
``OrderConfirmation`` modes.

Every figure is printed with its baseline from the same run and the ratio, because the machine
is shared and absolute times move with its load. Medians throughout. Each mode is compared with
a baseline doing the same I/O (``benchmarks/baseline_postback.py``): with ``off`` both send the
queue message only; with ``on`` both also write one DynamoDB ``UpdateItem`` to the order ledger.

1. Whole first invocation (import + first request, as Lambda's first invoke of a container) in
   fresh interpreters, kinds interleaved run by run: the postback function in each mode against
   the baseline in the same mode, and against the boto3 floor (``import boto3`` and an SQS
   client); the callback function against its boto3 floor.
2. Warm requests in one process, interleaved in blocks, one mode after the other: the postback
   handler and the baseline, against a moto server over HTTP and then with the AWS calls stubbed
   (botocore's Stubber on both sides' SQS and DynamoDB clients), at the template's default log
   level (INFO). CPU is this process's CPU time per request (the emulator runs in another
   process); wall is the request's elapsed time.
3. Log bytes per accepted (each mode), forged (403) and malformed (400) postback, metric lines
   included; Secrets Manager calls per 1,000 warm postbacks.
4. The layer zipped and unzipped (its requirements installed for arm64, as ``sam build`` would),
   and its largest parts.
5. Cost per million postbacks at ap-south-1 list prices, from the figures above.

Writes the table to stdout and benchmarks/RESULTS.md, and every figure to benchmarks/results.json.
Environment: BENCH_COLD_RUNS (default 15), BENCH_WARM_ROUNDS (16), BENCH_QUICK=1 (a smoke run:
few samples, no layer build), BENCH_OUTPUT (folder for RESULTS.md and results.json).
"""

from __future__ import annotations

import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

# The same context the first-invocation child hands the handler, so warm and cold runs match.
from benchmarks.emulator import moto_server
from benchmarks.first_invocation import Context

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
LAYER = ROOT / "layers" / "kitehooks"
POSTBACK = ROOT / "functions" / "postback"
CALLBACK = ROOT / "functions" / "callback"
QUICK = os.environ.get("BENCH_QUICK") == "1"
COLD_RUNS = int(os.environ.get("BENCH_COLD_RUNS", "2" if QUICK else "15"))
WARM_ROUNDS = int(os.environ.get("BENCH_WARM_ROUNDS", "2" if QUICK else "16"))
WARM_PER_ROUND = 5 if QUICK else 20
STUBBED_PER_ROUND = 10 if QUICK else 100
SECRETS_WINDOW = 20 if QUICK else 1000
LOG_SAMPLES = 10 if QUICK else 100
OUTPUT = Path(os.environ.get("BENCH_OUTPUT") or BENCH)
REGION = "ap-south-1"
API_KEY, API_SECRET = "bench_api_key", "bench-api-secret-0hdv7iw5"
# The template's OrderConfirmation values; "on" (its default) adds the order ledger's one write.
MODES = ("off", "on")

GOALS = {
    "first_invocation_vs_baseline": 1.10,
    "warm_cpu_emulator_vs_baseline": 1.10,
    "warm_cpu_stubbed_vs_baseline": 4.0,
    "log_bytes_per_accepted": 300,
    "cost_per_million_usd": 1.85,
    # The room the $1.85 goal left above the baseline's $1.74 when it was set: the same room
    # above a baseline that also writes the ledger.
    "cost_above_baseline_usd": 0.11,
}

# ap-south-1 (Mumbai) list prices, USD, first pricing tier; update them here when AWS changes them.
PRICES = {
    "lambda_arm64_gb_second": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "http_api_request": 1.00 / 1e6,  # first 300 million a month
    "sqs_fifo_request": 0.50 / 1e6,  # one request per 64 KB chunk: a postback is ~1.5 KB
    "logs_ingested_gb": 0.50,  # CloudWatch Logs, standard class; GB = 2**30 bytes
    # DynamoDB on-demand, standard table class, per write request unit: an assumed list price
    # (the November 2024 on-demand price, half the earlier $1.425 per million), not checked online.
    "dynamodb_write_request_unit": 0.7125 / 1e6,
}
MEMORY_GB = 512 / 1024  # the template's MemorySize
# Write request units of one ledger write (OrderConfirmation=on): the item (under 1 KB), and for
# an order's first postback its RecentPostbacks index entry (day and touched_at are set once per
# order, so later writes leave the index alone and cost 1). The upper bound: Kite sends a few
# postbacks per order, so the average is nearer 1.5.
LEDGER_WRITE_UNITS = 2


# --------------------------------------------------------------------------------------------
# The emulator and the resources


def _environment(endpoint: str) -> dict[str, str]:
    """What every function gets, as the template sets it (LogLevel at its default, INFO)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "POWERTOOLS_SERVICE_NAME": "kitehooks",
        "POWERTOOLS_METRICS_NAMESPACE": "kitehooks",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "AWS_LAMBDA_LOG_LEVEL": "INFO",
        "CREDENTIALS_CACHE_SECONDS": "300",
    }


# --------------------------------------------------------------------------------------------
# 1. First invocations in fresh interpreters


def _first_invocation(
    kind: str, code_uri: Path, event: dict[str, Any], env: dict[str, str]
) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-I", str(BENCH / "first_invocation.py"), kind, str(code_uri), str(LAYER)],
        input=json.dumps(event),
        env=env,
        cwd=str(BENCH),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if kind in ("baseline", "function") and figures["status"] not in (200, 302):
        raise RuntimeError(f"{kind} in {code_uri.name} answered {figures['status']}: {result.stdout[-2000:]}")
    return figures


def _first_postback(run: int, number: int) -> dict[str, Any]:
    """An order of its own for each kind in a run: none finds its state already queued or recorded."""
    from local.samples import http_api_event, postback_body

    body = postback_body(API_SECRET, order_id=f"31{run:011d}{number:02d}")
    return http_api_event("POST", "/postback", body, request_id=f"first-{run}-{number}")


def first_invocations(endpoint: str, stack: dict[str, Any], stack_name: str) -> dict[str, Any]:
    from kitehooks.login import state as login_state
    from kitehooks.login.start import state_cookie_name
    from local.kite_simulator import KiteSimulator
    from local.samples import http_api_event

    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "POWERTOOLS_", "KITE_")) and key != "PYTHONPATH"
    }
    common = {
        **base,
        **_environment(endpoint),
        "API_CREDENTIALS_SECRET_ID": stack["ApiCredentialsSecret"]["Ref"],
    }
    postback_env = {
        **common,
        "ORDER_UPDATES_QUEUE_URL": stack["OrderUpdatesQueue"]["Ref"],
        "UNDELIVERED_BUCKET": stack["UndeliveredPostbacksBucket"]["Ref"],
    }
    # As the template sets ORDER_LEDGER_TABLE: empty with off, the table with on.
    mode_env = {
        "off": postback_env,
        "on": {**postback_env, "ORDER_LEDGER_TABLE": stack["OrderLedgerTable"]["Ref"]},
    }
    names = ["floor-postback", *(f"{side}-{mode}" for mode in MODES for side in ("baseline", "postback"))]
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in (*names, "floor-callback", "callback")}
    with KiteSimulator(
        api_key=API_KEY, api_secret=API_SECRET, redirect_url="https://bench.example/callback"
    ) as sim:
        from urllib.parse import parse_qs, urlsplit

        import requests

        callback_env = {
            **common,
            "SESSION_PREFIX": f"{stack_name}/sessions",
            "LOGIN_STATES_TABLE": stack["LoginStatesTable"]["Ref"],
            "KITE_API_ROOT": sim.url,
            "KITE_LOGIN_URL": sim.url + "/connect/login",
            "KITE_READ_TIMEOUT_SECONDS": "10",
        }
        _first_invocation("floor-postback", POSTBACK, {}, postback_env)  # warm the OS file cache once
        for run in range(COLD_RUNS):
            location = requests.get(sim.login_url(), allow_redirects=False, timeout=5).headers["Location"]
            request_token = parse_qs(urlsplit(location).query)["request_token"][0]
            nonce = login_state.new_nonce()
            state = login_state.sign_state(API_SECRET, nonce, int(time.time()) + 600, None)
            callback_event = http_api_event(
                "GET",
                "/callback",
                query=f"action=login&type=login&status=success&request_token={request_token}&state={state}",
                cookies=[f"{state_cookie_name(True)}={nonce}"],
            )

            kinds: list[tuple[str, str, Path, dict[str, Any], dict[str, str]]] = [
                ("floor-postback", "floor-postback", POSTBACK, {}, postback_env),
                ("floor-callback", "floor-callback", CALLBACK, {}, callback_env),
                ("callback", "function", CALLBACK, callback_event, callback_env),
            ]
            for number, mode in enumerate(MODES):
                env = mode_env[mode]
                kinds += [
                    (f"baseline-{mode}", "baseline", BENCH, _first_postback(run, 2 * number), env),
                    (f"postback-{mode}", "function", POSTBACK, _first_postback(run, 2 * number + 1), env),
                ]
            random.Random(run).shuffle(kinds)  # noqa: S311 - an order, not a secret: no kind always runs right after another
            for name, kind, code_uri, event, env in kinds:
                samples[name].append(_first_invocation(kind, code_uri, event, env))
    medians = {
        name: {
            "wall_ms": statistics.median(s["wall_ms"] for s in runs),
            "cpu_ms": statistics.median(s["cpu_ms"] for s in runs),
        }
        for name, runs in samples.items()
    }
    postback_runs = [run for mode in MODES for run in samples[f"postback-{mode}"]]
    heavy = sorted({module for run in postback_runs for module in run["heavy_modules"]})
    return {"runs": COLD_RUNS, "medians": medians, "postback_heavy_modules": heavy}


# --------------------------------------------------------------------------------------------
# 2-3. Warm requests, log bytes and Secrets Manager reads, in this process


class CountingSink:
    """Stands in for Lambda's stdout/stderr: counts what the function writes, keeps nothing."""

    def __init__(self, keep: bool = False) -> None:
        self.bytes = 0
        self.lines = 0
        self.kept: list[str] | None = [] if keep else None

    def write(self, text: str) -> int:
        self.bytes += len(text.encode("utf-8"))
        self.lines += text.count("\n")
        if self.kept is not None:
            self.kept.extend(line for line in text.splitlines() if line.strip())
        return len(text)

    def flush(self) -> None:
        pass


@contextmanager
def captured(sink: CountingSink) -> Iterator[None]:
    real: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)
    sys.stdout = sys.stderr = sink
    try:
        yield
    finally:
        sys.stdout, sys.stderr = real


Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def _timed(handler: Handler, events: list[dict[str, Any]], expect: int) -> tuple[list[float], list[float]]:
    cpu_us: list[float] = []
    wall_us: list[float] = []
    context = Context()
    for event in events:
        wall, cpu = time.perf_counter_ns(), time.process_time_ns()
        response = handler(event, context)
        cpu_us.append((time.process_time_ns() - cpu) / 1000)
        wall_us.append((time.perf_counter_ns() - wall) / 1000)
        if response["statusCode"] != expect:
            raise RuntimeError(f"expected {expect}, got {response}")
    return cpu_us, wall_us


def _interleaved(
    sides: dict[str, Handler],
    make_events: Callable[[str, int], list[dict[str, Any]]],
    per_round: int,
    before_block: Callable[[str, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    samples: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "wall": []} for name in sides}
    sinks = {name: CountingSink() for name in sides}
    for round_index in range(WARM_ROUNDS):
        order = list(sides.items())
        if round_index % 2:
            order.reverse()  # neither side always runs first
        for name, handler in order:
            events = make_events(name, per_round)
            if before_block is not None:
                before_block(name, per_round)
            gc.collect()
            with captured(sinks[name]):
                cpu, wall = _timed(handler, events, 200)
            samples[name]["cpu"] += cpu
            samples[name]["wall"] += wall
    return {
        name: {
            "cpu_us": statistics.median(values["cpu"]),
            "wall_us": statistics.median(values["wall"]),
            "requests": float(len(values["cpu"])),
            "log_bytes_per_request": sinks[name].bytes / len(values["cpu"]),
        }
        for name, values in samples.items()
    }


def _baseline_module(name: str, ledger_table: str | None) -> ModuleType:
    """benchmarks/baseline_postback.py loaded as a container of its own, in one mode (it reads
    ORDER_LEDGER_TABLE when loaded, as the function reads its settings once per container)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / "baseline_postback.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load benchmarks/baseline_postback.py")
    module = importlib.util.module_from_spec(spec)
    os.environ.pop("ORDER_LEDGER_TABLE", None)
    if ledger_table:
        os.environ["ORDER_LEDGER_TABLE"] = ledger_table
    spec.loader.exec_module(module)
    os.environ.pop("ORDER_LEDGER_TABLE", None)
    return module


def warm(endpoint: str, stack: dict[str, Any]) -> dict[str, Any]:
    from botocore.stub import Stubber

    from local.samples import http_api_event, postback_body

    os.environ.update(_environment(endpoint))
    os.environ.update(
        ORDER_UPDATES_QUEUE_URL=stack["OrderUpdatesQueue"]["Ref"],
        UNDELIVERED_BUCKET=stack["UndeliveredPostbacksBucket"]["Ref"],
        API_CREDENTIALS_SECRET_ID=stack["ApiCredentialsSecret"]["Ref"],
    )
    os.environ.pop("ORDER_LEDGER_TABLE", None)
    ledger_table = stack["OrderLedgerTable"]["Ref"]
    sys.path[:0] = [str(POSTBACK)]
    import app  # type: ignore[import-not-found]  # functions/postback, put on sys.path above

    from kitehooks import aws, config
    from kitehooks.postbacks import receiver

    baselines = {
        mode: _baseline_module(f"baseline_{mode}", ledger_table if mode == "on" else None) for mode in MODES
    }
    counter = iter(range(10**9))

    def events(name: str, count: int, secret: str = API_SECRET) -> list[dict[str, Any]]:
        made = []
        for _ in range(count):
            number = next(counter)
            body = postback_body(secret, order_id=f"32{number:013d}", status="COMPLETE")
            made.append(http_api_event("POST", "/postback", body, request_id=f"Ab1CdEfGhI{number:06d}"))
        return made

    def use_mode(mode: str) -> None:
        """The function's container in this mode: its settings as the template sets them, and the
        receiver made again from them (the credentials store, and its cached secret, stay)."""
        os.environ.pop("ORDER_LEDGER_TABLE", None)
        if mode == "on":
            os.environ["ORDER_LEDGER_TABLE"] = ledger_table
        config.postback_settings.cache_clear()
        receiver.receiver.cache_clear()

    import boto3

    queue_url = stack["OrderUpdatesQueue"]["Ref"]
    emptier = boto3.client("sqs")

    def empty_queue(name: str, count: int) -> None:
        # moto checks a FIFO message's deduplication against every message it holds, so a queue
        # that fills up makes each send slower than the last: both sides start from an empty one.
        # (PurgeQueue is allowed once a minute: the messages are received and deleted instead.)
        while batch := emptier.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
            emptier.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )

    by_mode: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        use_mode(mode)
        baseline = baselines[mode]
        sides: dict[str, Handler] = {"baseline": baseline.handler, "postback": app.handler}
        with captured(CountingSink()):  # the first request of each (the secret read) is not a warm one
            _timed(baseline.handler, events("baseline", 2), 200)
            _timed(app.handler, events("postback", 2), 200)
        emulator = _interleaved(sides, events, WARM_PER_ROUND, before_block=empty_queue)

        # Log bytes per accepted postback, metric lines included, at the default level.
        accepted = CountingSink()
        with captured(accepted):
            _timed(app.handler, events("postback", LOG_SAMPLES), 200)
        empty_queue("postback", 0)

        # The same requests with the AWS calls stubbed on both sides: only each side's own work.
        clients = {"baseline": [baseline.sqs], "postback": [aws.sqs_client()]}
        if mode == "on":
            clients["baseline"].append(baseline.dynamodb)
            clients["postback"].append(aws.dynamodb_client())
        stubbers = {
            side: [Stubber(client) for client in side_clients] for side, side_clients in clients.items()
        }
        for side_stubbers in stubbers.values():
            for stubber in side_stubbers:
                stubber.activate()

        def queue_answers(name: str, count: int) -> None:
            for _ in range(count):
                for stubber in stubbers[name]:  # noqa: B023 - used within this mode's loop only
                    if stubber.client.meta.service_model.service_name == "sqs":
                        answer = {"MessageId": str(uuid.uuid4()), "MD5OfMessageBody": "0" * 32}
                        stubber.add_response("send_message", answer)
                    else:
                        stubber.add_response("update_item", {})

        stubbed = _interleaved(sides, events, STUBBED_PER_ROUND, before_block=queue_answers)
        for side_stubbers in stubbers.values():
            for stubber in side_stubbers:
                stubber.deactivate()
        by_mode[mode] = {
            "emulator": emulator,
            "stubbed": stubbed,
            "log_bytes_per_accepted": accepted.bytes / LOG_SAMPLES,
            "log_lines_per_accepted": accepted.lines / LOG_SAMPLES,
        }
        if mode == "on":
            # Proof the function's ledger write happened (a failed one logs a warning line instead).
            counted = boto3.client("dynamodb").scan(TableName=ledger_table, Select="COUNT")
            by_mode[mode]["ledger_items_after"] = counted["Count"]

    # Mode-independent figures, with OrderConfirmation=off (the emulator's DynamoDB takes ~13 ms
    # a write, which would only make this part of the run longer).
    use_mode("off")
    with captured(CountingSink()):
        _timed(app.handler, events("postback", 2), 200)

    # Secrets Manager reads over SECRETS_WINDOW warm postbacks (the secret is cached for 300 s).
    reads = 0

    def count_read(**_: Any) -> None:
        nonlocal reads
        reads += 1

    aws.secretsmanager_client().meta.events.register("before-send.secrets-manager.GetSecretValue", count_read)
    for start in range(0, SECRETS_WINDOW, WARM_PER_ROUND):
        empty_queue("postback", 0)  # in blocks: 1,000 sends to one queue took the emulator ~35 s
        with captured(CountingSink()):
            _timed(app.handler, events("postback", min(WARM_PER_ROUND, SECRETS_WINDOW - start)), 200)
    secrets_per_1000 = reads * 1000 / SECRETS_WINDOW

    # Log bytes of the refused requests (the same in both modes: nothing is written for them).
    by_outcome: dict[str, float] = {}
    outcomes = {
        "forged_403": (
            [
                http_api_event("POST", "/postback", postback_body("not-the-secret", order_id=f"33{i:013d}"))
                for i in range(LOG_SAMPLES)
            ],
            403,
        ),
        "malformed_400": ([http_api_event("POST", "/postback", b"[]") for _ in range(LOG_SAMPLES)], 400),
    }
    for outcome, (outcome_events, status) in outcomes.items():
        outcome_sink = CountingSink()
        with captured(outcome_sink):
            _timed(app.handler, outcome_events, status)
        by_outcome[outcome] = outcome_sink.bytes / LOG_SAMPLES
        by_outcome[outcome + "_lines"] = outcome_sink.lines / LOG_SAMPLES
    sample_sink = CountingSink(keep=True)
    with captured(sample_sink):
        app.handler(events("postback", 1)[0], Context())
        app.handler(http_api_event("POST", "/postback", b"[]"), Context())
    return {
        "modes": by_mode,
        "secrets_manager_reads_per_1000_warm": secrets_per_1000,
        "log_bytes": by_outcome,
        "sample_lines": sample_sink.kept,
    }


# --------------------------------------------------------------------------------------------
# 4. The layer


def layer_size() -> dict[str, Any]:
    """The layer as ``sam build`` makes it (``python/`` + its requirements for arm64), zipped."""
    if QUICK:
        return {"skipped": "BENCH_QUICK"}
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "python"
        install = subprocess.run(
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--target", str(target), "--platform", "manylinux2014_aarch64", "--implementation", "cp",
                "--python-version", "3.13", "--only-binary=:all:", "-r", str(LAYER / "requirements.txt"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )  # fmt: skip
        if install.returncode != 0:
            return {"unavailable": install.stderr.strip().splitlines()[-1:]}
        shutil.copytree(
            LAYER / "kitehooks", target / "kitehooks", ignore=shutil.ignore_patterns("__pycache__")
        )
        archive = Path(scratch) / "layer.zip"
        unzipped: dict[str, int] = {}
        zipped: dict[str, int] = {}
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as layer_zip:
            for path in sorted(target.rglob("*")):
                if path.is_file():
                    layer_zip.write(path, path.relative_to(scratch).as_posix())
            for info in layer_zip.infolist():
                part = info.filename.split("/")[1]
                part = part.split("-")[0] if part.endswith(".dist-info") else part
                unzipped[part] = unzipped.get(part, 0) + info.file_size
                zipped[part] = zipped.get(part, 0) + info.compress_size
        largest = sorted(unzipped, key=lambda part: -unzipped[part])[:6]
        return {
            "zipped_bytes": archive.stat().st_size,
            "unzipped_bytes": sum(unzipped.values()),
            "largest_parts": [
                {"part": part, "unzipped_bytes": unzipped[part], "zipped_bytes": zipped[part]}
                for part in largest
            ],
        }


# --------------------------------------------------------------------------------------------
# 5. Cost


def cost_per_million(duration_ms: float, log_bytes: float, ledger_writes: int = 0) -> dict[str, float]:
    billed_ms = math.ceil(duration_ms)  # Lambda bills whole milliseconds
    parts = {
        "http_api": PRICES["http_api_request"] * 1e6,
        "lambda_requests": PRICES["lambda_request"] * 1e6,
        "lambda_compute": PRICES["lambda_arm64_gb_second"] * MEMORY_GB * billed_ms / 1000 * 1e6,
        "sqs_fifo": PRICES["sqs_fifo_request"] * 1e6,
        "dynamodb_writes": PRICES["dynamodb_write_request_unit"] * LEDGER_WRITE_UNITS * ledger_writes * 1e6,
        "logs": PRICES["logs_ingested_gb"] * log_bytes / 2**30 * 1e6,
    }
    return {**parts, "billed_ms": float(billed_ms), "total": sum(parts.values())}


COST_FORMULA = (
    "per million = 1e6 x (HTTP API request + Lambda request + SQS FIFO request"
    " + 0.5 GB x ceil(warm wall ms against the emulator)/1000 x GB-s price"
    f" + ledger writes (0 with off, 1 with on) x {LEDGER_WRITE_UNITS} write request units x WRU price"
    " + log bytes/2^30 x ingestion price per GB)"
)


# --------------------------------------------------------------------------------------------
# The report


def _machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "cpu model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpu": f"{model} ({os.cpu_count()} cores)",
        "python": platform.python_version(),
        "load_average": " ".join(f"{value:.2f}" for value in os.getloadavg()),
    }


def _verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "MISSED"


Row = tuple[str, float, float, float | None, str]


def _rows(results: dict[str, Any], mode: str) -> list[Row]:
    """One mode's rows: label, kitehooks, baseline, ratio, goal text."""
    first = results["first_invocation"]["medians"]
    figures = results["warm"]["modes"][mode]
    emulator, stubbed = figures["emulator"], figures["stubbed"]
    costs = results["cost_per_million"][mode]
    post, base = first[f"postback-{mode}"], first[f"baseline-{mode}"]
    ratios = results["ratios"][mode]
    post_cost, base_cost = costs["postback"]["total"], costs["baseline"]["total"]

    def goal(key: str, measured: float) -> str:
        unit = "x" if key.endswith("vs_baseline") else ""
        money = "$" if key.endswith("usd") else ""
        return f"<= {money}{GOALS[key]:g}{unit}: {_verdict(measured, GOALS[key])}"

    return [
        ("Whole first invocation (wall ms)", post["wall_ms"], base["wall_ms"],
         ratios["first_invocation_vs_baseline"],
         goal("first_invocation_vs_baseline", ratios["first_invocation_vs_baseline"])),
        ("  same, CPU ms", post["cpu_ms"], base["cpu_ms"], post["cpu_ms"] / base["cpu_ms"], ""),
        ("Warm CPU per request, moto server (µs)", emulator["postback"]["cpu_us"],
         emulator["baseline"]["cpu_us"], ratios["warm_cpu_emulator_vs_baseline"],
         goal("warm_cpu_emulator_vs_baseline", ratios["warm_cpu_emulator_vs_baseline"])),
        ("Warm wall per request, moto server (µs)", emulator["postback"]["wall_us"],
         emulator["baseline"]["wall_us"],
         emulator["postback"]["wall_us"] / emulator["baseline"]["wall_us"], ""),
        ("Warm CPU per request, AWS calls stubbed (µs)", stubbed["postback"]["cpu_us"],
         stubbed["baseline"]["cpu_us"], ratios["warm_cpu_stubbed_vs_baseline"],
         goal("warm_cpu_stubbed_vs_baseline", ratios["warm_cpu_stubbed_vs_baseline"])),
        ("Warm wall per request, AWS calls stubbed (µs)", stubbed["postback"]["wall_us"],
         stubbed["baseline"]["wall_us"], stubbed["postback"]["wall_us"] / stubbed["baseline"]["wall_us"], ""),
        ("Log bytes per accepted postback (INFO)", figures["log_bytes_per_accepted"], 0.0, None,
         goal("log_bytes_per_accepted", figures["log_bytes_per_accepted"])),
        ("Log lines per accepted postback", figures["log_lines_per_accepted"], 0.0, None, ""),
        ("Cost per million postbacks (USD)", post_cost, base_cost, post_cost / base_cost,
         goal("cost_per_million_usd", post_cost)),
        ("  above the baseline (USD)", post_cost - base_cost, 0.0, None,
         goal("cost_above_baseline_usd", post_cost - base_cost)),
    ]  # fmt: skip


def _table(rows: list[Row]) -> list[str]:
    lines = ["| Figure | kitehooks | baseline | ratio | goal |", "|---|---:|---:|---:|---|"]
    for label, value, baseline, ratio, goal in rows:
        ratio_text = "" if ratio is None else f"{ratio:.3f}x"
        lines.append(f"| {label} | {value:,.2f} | {baseline:,.2f} | {ratio_text} | {goal} |")
    return lines


def report(results: dict[str, Any]) -> str:
    first = results["first_invocation"]["medians"]
    warm_results = results["warm"]
    logs = warm_results["log_bytes"]
    machine = results["machine"]
    floor = first["floor-postback"]
    reads = warm_results["secrets_manager_reads_per_1000_warm"]
    shared: list[Row] = [
        ("Whole first invocation, postback (off) vs boto3 floor (import boto3 + SQS client), wall ms",
         first["postback-off"]["wall_ms"], floor["wall_ms"],
         first["postback-off"]["wall_ms"] / floor["wall_ms"], ""),
        ("  baseline (off) vs boto3 floor", first["baseline-off"]["wall_ms"], floor["wall_ms"],
         first["baseline-off"]["wall_ms"] / floor["wall_ms"], ""),
        ("Whole first invocation, callback vs its boto3 floor (wall ms)", first["callback"]["wall_ms"],
         first["floor-callback"]["wall_ms"],
         first["callback"]["wall_ms"] / first["floor-callback"]["wall_ms"], ""),
        ("Log bytes per forged postback (403)", logs["forged_403"], 0.0, None, ""),
        ("Log bytes per malformed postback (400)", logs["malformed_400"], 0.0, None, ""),
        ("Secrets Manager reads per 1,000 warm postbacks", reads, 0.0, None, ""),
    ]  # fmt: skip
    text = [
        "# kitehooks benchmark results",
        "",
        f"Run: {machine['date']} on {machine['cpu']}, {machine['platform']}, Python {machine['python']}, "
        f"load average {machine['load_average']} at the end (a shared machine: compare ratios, not times).",
        f"First invocations: {results['first_invocation']['runs']} runs of each kind in fresh interpreters, "
        f"interleaved; warm: {WARM_ROUNDS} interleaved rounds per mode; medians. Each mode is compared with "
        "a baseline doing the same I/O.",
        "Phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["phase_seconds"].items()) + ".",
        "",
    ]
    titles = {
        "off": "OrderConfirmation=off (the queue message only; the baseline sends it too)",
        "on": "OrderConfirmation=on, the default (the queue message, then one DynamoDB UpdateItem; "
        "so does the baseline)",
    }
    for mode in MODES:
        text += [f"## {titles[mode]}", "", *_table(_rows(results, mode)), ""]
    text += ["## Both modes", "", *_table(shared), ""]
    costs = results["cost_per_million"]
    text += [
        "Cost per million postbacks: " + COST_FORMULA + ".",
        "Prices (ap-south-1, USD; DynamoDB's is an assumed list price, not checked online): "
        + ", ".join(f"{k} {v:.10g}" for k, v in PRICES.items())
        + ".",
    ]
    for mode in MODES:
        for side in ("postback", "baseline"):
            name = "kitehooks" if side == "postback" else "baseline"
            parts = ", ".join(f"{k} {v:.4f}" for k, v in costs[mode][side].items())
            text.append(f"{name} ({mode}): {parts}.")
    text.append("")
    layer = results["layer"]
    if "zipped_bytes" in layer:
        text.append(
            f"Layer: {layer['zipped_bytes'] / 1e6:.2f} MB zipped, "
            f"{layer['unzipped_bytes'] / 1e6:.2f} MB unzipped; "
            "largest parts (unzipped / zipped MB): "
            + ", ".join(
                f"{p['part']} {p['unzipped_bytes'] / 1e6:.2f} / {p['zipped_bytes'] / 1e6:.2f}"
                for p in layer["largest_parts"]
            )
            + "."
        )
    else:
        text.append(f"Layer: not measured ({layer}).")
    text += ["", "Sample lines (an accepted postback, then a malformed one):", "", "```"]
    text += [*warm_results["sample_lines"], "```", ""]
    return "\n".join(text)


def main() -> int:
    sys.path[:0] = [str(ROOT), str(LAYER)]
    from local.provision import provision

    with moto_server() as endpoint:
        os.environ.update(_environment(endpoint))
        stack_name = f"bench{uuid.uuid4().hex[:6]}"
        stack: dict[str, Any] = provision(
            ROOT / "template.yaml",
            stack_name=stack_name,
            region=REGION,
            secret_values={
                "ApiCredentialsSecret": json.dumps({"api_key": API_KEY, "api_secret": API_SECRET})
            },
        )
        started = time.monotonic()
        first = first_invocations(endpoint, stack, stack_name)
        first_done = time.monotonic()
        warm_results = warm(endpoint, stack)
        warm_done = time.monotonic()
    layer = layer_size()
    phase_seconds = {
        "first_invocations": first_done - started,
        "warm": warm_done - first_done,
        "layer": time.monotonic() - warm_done,
    }
    medians = first["medians"]
    costs: dict[str, dict[str, dict[str, float]]] = {}
    ratios: dict[str, dict[str, float]] = {}
    for mode in MODES:
        figures = warm_results["modes"][mode]
        emulator, stubbed = figures["emulator"], figures["stubbed"]
        writes = 1 if mode == "on" else 0
        costs[mode] = {
            "postback": cost_per_million(
                emulator["postback"]["wall_us"] / 1000, figures["log_bytes_per_accepted"], writes
            ),
            "baseline": cost_per_million(emulator["baseline"]["wall_us"] / 1000, 0.0, writes),
        }
        ratios[mode] = {
            "first_invocation_vs_baseline": medians[f"postback-{mode}"]["wall_ms"]
            / medians[f"baseline-{mode}"]["wall_ms"],
            "warm_cpu_emulator_vs_baseline": emulator["postback"]["cpu_us"] / emulator["baseline"]["cpu_us"],
            "warm_cpu_stubbed_vs_baseline": stubbed["postback"]["cpu_us"] / stubbed["baseline"]["cpu_us"],
        }
    results = {
        "machine": _machine(),
        "phase_seconds": phase_seconds,
        "first_invocation": first,
        "warm": warm_results,
        "layer": layer,
        "prices": PRICES,
        "ledger_write_units": LEDGER_WRITE_UNITS,
        "cost_formula": COST_FORMULA,
        "cost_per_million": costs,
        "ratios": ratios,
        "goals": GOALS,
    }
    text = report(results)
    print(text)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    previous = OUTPUT / "RESULTS.md"
    notes = ""
    if previous.exists() and "\n## Notes" in previous.read_text():
        notes = previous.read_text()[previous.read_text().index("\n## Notes") :]
    previous.write_text(text + notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
