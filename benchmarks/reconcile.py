"""``make bench``: what reconciliation costs, and the cadence each session gets.

1. Cost. Each scenario (every postback delivered, 20% dropped, OrderConfirmation=off) runs on a
   fresh stack in a moto server (over HTTP: the template's queue, ledger table and secrets) and
   the project's Kite simulator (over HTTP), with several users, each with a session stored as the
   callback stores it. The postbacks Kite did not drop go, in its order, through the postback
   function's own handler (as Lambda calls it); with OrderConfirmation=off they write nothing the
   reconciler reads and are not replayed. The real :class:`kitehooks.orders.reconcile.Reconciler`,
   wired as ``functions/reconciler`` wires it, then runs:

   - a run every minute: a day on a simulated clock (the book's and the reconciler's), each
     minute every live order moving 0, 1 or 2 steps, then a run; two more runs after the last
     move let the last lost states pass the grace;
   - catching up: a whole day hours old, then one run (as after an outage), then one more.

   Counted: Kite calls at the simulator (``GET /orders``, ``GET /orders/{id}``); DynamoDB, SQS and
   Secrets Manager requests by botocore's ``before-send`` (one per HTTP request); wall time with
   the Kite pacing rate set high (``BENCH_RATE``), and the wall time the template's default rate
   would give, replayed from the measured gaps between Kite calls.
2. Cadence at 100, 1,000 and 10,000 sessions with the template's defaults (interval, Timeout,
   rate): the real :func:`kitehooks.orders.schedule.polling_order` and the reconciler's own stop
   rule (a session is started only with ``SESSION_STEP_SECONDS`` left) over a simulated clock, one
   run a minute through a trading day, each session's poll costing its Kite calls at the pacing
   rate (a model: no Kite and no AWS are called in this part).

Writes the table to stdout and benchmarks/RECONCILE.md, every figure to benchmarks/reconcile.json.
Environment: BENCH_QUICK=1 (a smoke run: a few orders, short days), BENCH_RECONCILE_ORDERS and
BENCH_RECONCILE_USERS (per scenario), BENCH_RATE (Kite calls/s for the measured runs),
BENCH_OUTPUT (folder for RECONCILE.md and reconcile.json).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import io
import itertools
import json
import math
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from benchmarks.emulator import moto_server

if TYPE_CHECKING:
    from local.kite_orders import OrderBook, PostbackDelivery
    from local.kite_simulator import KiteSimulator

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
TEMPLATE = ROOT / "template.yaml"
QUICK = os.environ.get("BENCH_QUICK") == "1"
ORDERS = int(os.environ.get("BENCH_RECONCILE_ORDERS", "12" if QUICK else "70"))
USERS = int(os.environ.get("BENCH_RECONCILE_USERS", "3" if QUICK else "5"))
# High enough that the pacer never waits: the measured wall time is the work, not the pacing.
BENCH_RATE = float(os.environ.get("BENCH_RATE", "1000"))
OUTPUT = Path(os.environ.get("BENCH_OUTPUT") or BENCH)
REGION = "ap-south-1"
API_KEY, API_SECRET = "bench_api_key", "bench-api-secret-r3c0nc1l"
SEED = 7

# The cadence model: sessions, the share of them with open orders, and what one poll costs.
CADENCE_SESSIONS = (100, 1_000, 10_000)
OPEN_SHARE = 0.10
# A session with open orders costs its GET /orders, and one order's history too when an order
# moved since the last poll and its postback was lost or it moved twice: both are modelled. One
# without open orders costs its GET /orders alone.
CALLS_OPEN_SESSION = (1, 2)
CALLS_IDLE_SESSION = 1
# Listing the sessions at the start of a run: Secrets Manager's ListSecrets returns 100 names a
# page. Assumed AWS latency per page (not measured here: moto is local).
LIST_PAGE_SECONDS = 0.1
LIST_PAGE_SIZE = 100
# The paced day: minutes of order moves, each followed by a run.
PACED_MINUTES = 4 if QUICK else 8
TRADING_MINUTES = 30 if QUICK else 7 * 60  # 09:00-15:59 IST: the template's default hours


# --------------------------------------------------------------------------------------------
# The emulator, the simulator and the functions


def _set_environment(endpoint: str) -> None:
    """boto3 and Powertools as the template sets them for every function; the log level is
    WARNING so that a few thousand postbacks print nothing (it changes no request)."""
    for name in [name for name in os.environ if name.startswith(("AWS_", "POWERTOOLS_", "KITE_"))]:
        del os.environ[name]
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        POWERTOOLS_SERVICE_NAME="kitehooks",
        POWERTOOLS_METRICS_NAMESPACE="kitehooks",
        POWERTOOLS_LOG_LEVEL="WARNING",
    )


def _load_function(name: str) -> ModuleType:
    """``functions/<name>/app.py`` under a module name of its own (every handler is ``app``)."""
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"bench_function_{name}_{uuid.uuid4().hex[:6]}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _reset_layer_caches() -> None:
    """A new container's view: settings and clients read again from the environment."""
    from kitehooks import aws, config, credentials
    from kitehooks.orders import settings
    from kitehooks.postbacks import receiver

    for cached in (
        config.credentials_settings,
        config.postback_settings,
        config.session_settings,
        credentials.credentials_store,
        receiver.receiver,
        settings.reconciler_settings,
        aws.sqs_client,
        aws.s3_client,
        aws.secretsmanager_client,
        aws.dynamodb_client,
        aws.events_client,
    ):
        cached.cache_clear()


@dataclass
class AwsRequests:
    """Every HTTP request the layer's boto3 clients send, by service and operation."""

    counts: Counter[str] = field(default_factory=Counter)

    def watch(self, client: Any) -> None:
        # One registration per client, however many runs watch it.
        client.meta.events.register("before-send", self._count, unique_id=f"bench-requests-{id(self)}")

    def _count(self, event_name: str, **details: Any) -> None:
        # before-send.<service>.<Operation>: once per HTTP request, retries included.
        _event, service, operation = event_name.split(".", 2)
        self.counts[f"{service}.{operation}"] += 1

    def service(self, name: str) -> int:
        return sum(count for key, count in self.counts.items() if key.startswith(f"{name}."))

    def clear(self) -> None:
        self.counts.clear()


class QueueConsumer:
    """Receives and deletes every message on the queue, as a deployment's consumer does: the
    emulator's FIFO send slows as its queue grows (~13 ms empty, ~65 ms at 750 messages here), a
    cost of the emulator, not of the work measured. Its own client: its requests are not counted."""

    def __init__(self, queue_url: str) -> None:
        import boto3

        self._sqs = boto3.client("sqs")
        self._queue_url = queue_url
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._consume, name="queue-consumer", daemon=True)

    def __enter__(self) -> QueueConsumer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    def _consume(self) -> None:
        while not self._stopped.is_set():
            messages = self._sqs.receive_message(
                QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if messages:
                self._sqs.delete_message_batch(
                    QueueUrl=self._queue_url,
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                        for index, message in enumerate(messages)
                    ],
                )


# --------------------------------------------------------------------------------------------
# 1. What a run costs


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    drop_share: float
    order_confirmation: bool


SCENARIOS = (
    Scenario("all_delivered", "every postback delivered", 0.0, True),
    Scenario("dropped_20", "20% of postbacks dropped", 0.2, True),
    Scenario("confirmation_off", "OrderConfirmation=off", 0.2, False),
)


@dataclass
class _Context:
    """The attributes of Lambda's context object that Powertools and the deadline read."""

    function_name: str = "kitehooks-bench"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:ap-south-1:123456789012:function:kitehooks-bench"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@dataclass
class World:
    """One scenario's stack in the emulator, its Kite simulator with a session per user, and the
    functions' code: the postback handler (OrderConfirmation=on only) and the Reconciler."""

    sim: KiteSimulator
    stack: Mapping[str, Any]
    users: list[str]
    default_rate: float
    reconciler_app: ModuleType
    requests: AwsRequests = field(default_factory=AwsRequests)
    postback_app: ModuleType | None = None
    delivered: int = 0

    def deliver(self, postbacks: Sequence[PostbackDelivery]) -> None:
        """The postbacks Kite sent (not dropped), in its order, through the postback function's
        handler. With OrderConfirmation=off they write nothing the reconciler reads: skipped."""
        from local.samples import http_api_event

        if self.postback_app is None:
            return
        context = _Context()
        # The metrics lines the handler prints are not wanted among the benchmark's output.
        with contextlib.redirect_stdout(io.StringIO()):
            for postback in postbacks:
                event = http_api_event(
                    "POST", "/postback", postback.body, request_id=f"bench-{self.delivered}"
                )
                self.delivered += self.postback_app.handler(event, context)["statusCode"] == 200

    def reconcile(self, now: datetime.datetime | None = None) -> dict[str, Any]:
        """One run of ReconcilerFunction's ``run`` (its own wiring of the real Reconciler, the
        warm container's session listing included), with two parts swapped: the pacer allows
        BENCH_RATE calls a second, and ``now`` is the run's time (the day's simulated clock)."""
        from kitehooks import aws, clock
        from kitehooks.deadline import Deadline
        from kitehooks.sessions.admin import Pacer

        app = self.reconciler_app
        run_time = now or clock.utc_now()
        for client in (
            aws.dynamodb_client(),
            aws.sqs_client(),
            aws.secretsmanager_client(),
            aws.events_client(),
        ):
            self.requests.watch(client)
        self.requests.clear()
        self.sim.clear_api_requests()
        started = time.perf_counter()
        with _swapped(app, Pacer=lambda per_second: Pacer(BENCH_RATE), clock=_FixedClock(run_time)):
            summary = app.run(Deadline.after(600)).detail()
        wall = time.perf_counter() - started
        kite = [request for request in self.sim.api_requests() if request.method == "GET"]
        return {
            "summary": summary,
            "wall_seconds": wall,
            "wall_seconds_at_default_rate": _paced_wall(
                wall, [request.received_at for request in kite], self.default_rate
            ),
            "kite": {
                "orders": sum(1 for request in kite if request.path == "/orders"),
                "histories": sum(1 for request in kite if request.path.startswith("/orders/")),
            },
            "aws": {
                "dynamodb": self.requests.service("dynamodb"),
                "sqs": self.requests.service("sqs"),
                "secretsmanager": self.requests.service("secrets-manager"),
                "events": self.requests.service("eventbridge"),
                "by_operation": dict(sorted(self.requests.counts.items())),
            },
        }


@dataclass(frozen=True)
class _FixedClock:
    """``kitehooks.clock`` as the run sees it: the day's simulated time."""

    at: datetime.datetime

    def utc_now(self) -> datetime.datetime:
        return self.at


@contextlib.contextmanager
def _swapped(module: ModuleType, **names: Any) -> Iterator[None]:
    """Module globals replaced for the duration, then put back."""
    before = {name: getattr(module, name) for name in names}
    for name, value in names.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(module, name, value)


@contextlib.contextmanager
def world(scenario: Scenario, default_rate: float) -> Iterator[World]:
    """A fresh stack and simulator, a session per user, the functions' settings as the template
    gives them, and a consumer draining the queue."""
    from kitehooks import aws
    from kitehooks.sessions.store import SessionStore, new_session
    from local.kite_simulator import KiteSimulator
    from local.provision import provision

    stack: dict[str, Any] = provision(
        TEMPLATE,
        stack_name=f"bench{uuid.uuid4().hex[:6]}",
        region=REGION,
        secret_values={"ApiCredentialsSecret": json.dumps({"api_key": API_KEY, "api_secret": API_SECRET})},
    )
    users = [f"BR{index:04d}" for index in range(USERS)]
    prefix = f"bench-{uuid.uuid4().hex[:6]}/sessions"
    with (
        KiteSimulator(
            api_key=API_KEY, api_secret=API_SECRET, redirect_url="https://kitehooks.example/callback"
        ) as sim,
        QueueConsumer(stack["OrderUpdatesQueue"]["Ref"]),
    ):
        os.environ.update(
            API_CREDENTIALS_SECRET_ID=stack["ApiCredentialsSecret"]["Ref"],
            ORDER_UPDATES_QUEUE_URL=stack["OrderUpdatesQueue"]["Ref"],
            UNDELIVERED_BUCKET=stack["UndeliveredPostbacksBucket"]["Ref"],
            # The postback function's with OrderConfirmation=on (with off it is not called), and
            # the reconciler's in both modes: it records what it sends and reads the claims.
            ORDER_LEDGER_TABLE=stack["OrderLedgerTable"]["Ref"],
            KITE_API_ROOT=sim.url,
            # Its own prefix: the function keeps its session listing per prefix for minutes.
            SESSION_PREFIX=prefix,
            RECONCILER_GRACE_SECONDS="60",
            KITE_RECONCILE_REQUESTS_PER_SECOND=str(default_rate),
        )
        _reset_layer_caches()
        store = SessionStore(aws.secretsmanager_client(), prefix)
        now = datetime.datetime.now(datetime.UTC)
        for user_id in users:
            grant = sim.mint_session(user_id)
            store.put(
                new_session(
                    user_id,
                    grant["user_name"],
                    API_KEY,
                    grant["access_token"],
                    grant["public_token"],
                    grant["refresh_token"],
                    grant["login_time"],
                    now,
                )
            )
        postback_app = _load_function("postback") if scenario.order_confirmation else None
        yield World(sim, stack, users, default_rate, _load_function("reconciler"), postback_app=postback_app)


def _paced_wall(wall: float, starts: Sequence[float], rate: float) -> float:
    """The run's wall time had the pacer allowed ``rate`` calls a second: each Kite call starts
    one interval after the previous one, or as late as the work between them made it (measured
    at BENCH_RATE, where the pacer never waited)."""
    if len(starts) < 2:
        return wall
    interval = 1.0 / rate
    paced = sum(max(interval, later - earlier) for earlier, later in itertools.pairwise(starts))
    return wall - (starts[-1] - starts[0]) + paced


def _totals(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several runs' counts added up."""
    return {
        "runs": len(runs),
        "kite_calls": sum(run["summary"]["kite_calls"] for run in runs),
        "get_orders": sum(run["kite"]["orders"] for run in runs),
        "get_order_history": sum(run["kite"]["histories"] for run in runs),
        "dynamodb_requests": sum(run["aws"]["dynamodb"] for run in runs),
        "sqs_requests": sum(run["aws"]["sqs"] for run in runs),
        "secretsmanager_requests": sum(run["aws"]["secretsmanager"] for run in runs),
        "recovered": sum(run["summary"]["recovered"] for run in runs),
        "waiting": sum(run["summary"]["waiting"] for run in runs),
        "wall_seconds": sum(run["wall_seconds"] for run in runs),
        "wall_seconds_at_default_rate": sum(run["wall_seconds_at_default_rate"] for run in runs),
    }


def order_driven(paced: Mapping[str, Any], quiet: Mapping[str, Any], rate: float) -> dict[str, float]:
    """What the orders cost in the runs of the paced day, per 1,000 orders: its totals less, for
    each run, what a run with nothing new costs the same sessions (``quiet``)."""
    totals, runs = paced["totals"], paced["totals"]["runs"]
    scale = 1000 / paced["orders"]
    return {
        "get_order_history": totals["get_order_history"] * scale,
        "dynamodb_requests": (totals["dynamodb_requests"] - runs * quiet["aws"]["dynamodb"]) * scale,
        "sqs_requests": (totals["sqs_requests"] - runs * quiet["aws"]["sqs"]) * scale,
        "recovered": totals["recovered"] * scale,
        "kite_seconds_at_default_rate": totals["get_order_history"] / rate * scale,
    }


def per_thousand(totals: Mapping[str, Any], orders: int) -> dict[str, float]:
    scale = 1000 / orders
    return {key: value * scale for key, value in totals.items() if key != "runs"}


def _postbacks(day: Sequence[PostbackDelivery]) -> dict[str, int]:
    return {
        "sent_by_kite": len(day),
        "dropped": sum(1 for postback in day if postback.outcome == "dropped"),
    }


def measure_catch_up(scenario: Scenario, default_rate: float) -> dict[str, Any]:
    """A whole day of orders, then a run (everything at once: the first run after an outage, or
    after the day's start), then a run with nothing new."""
    from local.kite_orders import IST, trading_day

    with world(scenario, default_rate) as here:
        # Kite's timestamps end hours ago: every state is past the reconciler's grace.
        start = (datetime.datetime.now(IST) - datetime.timedelta(hours=4)).strftime("%Y-%m-%d %H:%M:%S")
        # No postback URL: the book still draws its drops; what it would have sent is replayed.
        day = trading_day(
            here.sim.orders,
            orders=ORDERS,
            seed=SEED,
            drop_share=scenario.drop_share,
            start=start,
            users=here.users,
        )
        here.deliver([postback for postback in day.postbacks if postback.outcome == "no_url"])
        runs = [here.reconcile() for _ in range(2)]
    return {
        "orders": len(day.order_ids),
        "users": len(here.users),
        "states": day.states,
        "postbacks": {**_postbacks(day.postbacks), "accepted": here.delivered},
        "first_run": runs[0],
        "second_run": runs[1],
        "per_1000_orders": {
            "first_run": per_thousand(_totals(runs[:1]), len(day.order_ids)),
            "second_run": per_thousand(_totals(runs[1:]), len(day.order_ids)),
        },
    }


@dataclass
class _PacedOrder:
    """One order of the paced day: its steps still to come, from its placement on."""

    user_id: str
    quantity: int
    placed_minute: int
    steps: list[str]
    order_id: str | None = None
    filled: int = 0


def _paced_orders(rng: random.Random, users: Sequence[str], minutes: int) -> list[_PacedOrder]:
    orders: list[_PacedOrder] = []
    for _ in range(ORDERS):
        steps = ["place"] + ["fill-part"] * rng.randint(0, 2)
        ending = rng.random()
        if ending < 0.6:
            steps.append("fill-rest")
        elif ending < 0.85:
            steps.append("cancel")  # else it stays OPEN to the close
        orders.append(
            _PacedOrder(rng.choice(users), rng.randint(2, 20) * 5, rng.randrange(minutes // 2 + 1), steps)
        )
    return orders


def _move(book: OrderBook, order: _PacedOrder, rng: random.Random) -> None:
    step = order.steps.pop(0)
    if step == "place":
        exchange, symbol, price = rng.choice((("NSE", "SBIN", 820.0), ("NSE", "INFY", 1510.0)))
        form = {
            "exchange": exchange,
            "tradingsymbol": symbol,
            "transaction_type": rng.choice(("BUY", "SELL")),
            "quantity": str(order.quantity),
            "product": "MIS",
            "order_type": "LIMIT",
            "price": f"{price:.2f}",
        }
        order.order_id = book.place("regular", form, user_id=order.user_id)
    elif order.order_id is None:
        raise AssertionError("an order is placed first")
    elif step == "fill-part":
        if order.quantity - order.filled > 1:
            lot = rng.randint(1, order.quantity - order.filled - 1)
            book.fill(order.order_id, quantity=lot)
            order.filled += lot
    elif step == "fill-rest":
        book.fill(order.order_id)
    else:
        book.cancel(order.order_id)


def measure_paced(scenario: Scenario, default_rate: float) -> dict[str, Any]:
    """A day on a simulated clock with a run every minute, as the schedule runs it: each minute
    every live order moves 0, 1 or 2 steps (2 in one of seven minutes), Kite sends its postbacks,
    and the run at the minute's end sees the book. Two more runs after the last move let the
    last lost states pass the grace."""
    from local.kite_orders import IST, SteppingClock

    rng = random.Random(SEED)  # noqa: S311 - a reproducible day
    minutes = PACED_MINUTES
    with world(scenario, default_rate) as here:
        book = here.sim.orders
        book.configure(drop_share=scenario.drop_share, seed=SEED)
        opening = datetime.datetime.now(IST).replace(microsecond=0) - datetime.timedelta(hours=3)
        orders = _paced_orders(rng, here.users, minutes)
        runs: list[dict[str, Any]] = []
        sent = 0
        try:
            for minute in range(minutes + 2):
                start = opening + datetime.timedelta(minutes=minute)
                book.use_clock(SteppingClock(start, step_seconds=0.2))
                for order in orders:
                    if minute >= minutes or order.placed_minute > minute or not order.steps:
                        continue
                    moves = 1 if order.order_id is None else rng.choices((0, 1, 2), weights=(3, 3, 1))[0]
                    for _ in range(min(moves, len(order.steps))):
                        _move(book, order, rng)
                deliveries = book.deliveries()
                here.deliver([postback for postback in deliveries[sent:] if postback.outcome == "no_url"])
                sent = len(deliveries)
                runs.append(
                    here.reconcile(now=(start + datetime.timedelta(minutes=1)).astimezone(datetime.UTC))
                )
        finally:
            book.use_clock(None)
        placed = [order.order_id for order in orders if order.order_id is not None]
        day = book.deliveries()
    totals = _totals(runs)
    return {
        "orders": len(placed),
        "users": len(here.users),
        "minutes": minutes,
        "states": sum(len(book.history(order_id)) for order_id in placed),
        "postbacks": {**_postbacks(day), "accepted": here.delivered},
        "runs": runs,
        "totals": totals,
        "per_1000_orders": per_thousand(totals, len(placed)),
    }


# --------------------------------------------------------------------------------------------
# 2. The cadence each session gets


@dataclass(frozen=True)
class Defaults:
    """The template's defaults that set a run's reach."""

    interval_minutes: int
    timeout_seconds: float
    requests_per_second: float
    answer_margin_seconds: float
    session_step_seconds: float
    max_requests_per_second: float
    # A warm container keeps the session listing this long (0: every run lists).
    listing_cache_seconds: float

    @property
    def run_seconds(self) -> float:
        return self.timeout_seconds - self.answer_margin_seconds


def template_defaults() -> Defaults:
    from kitehooks.orders.reconcile import SESSION_STEP_SECONDS
    from local.gateway.template import load_template

    template = load_template(TEMPLATE)
    parameters = template["Parameters"]
    reconciler_app = _load_function("reconciler")
    return Defaults(
        interval_minutes=int(parameters["ReconcilerIntervalMinutes"]["Default"]),
        timeout_seconds=float(template["Resources"]["ReconcilerFunction"]["Properties"]["Timeout"]),
        requests_per_second=float(parameters["ReconcilerRequestsPerSecond"]["Default"]),
        answer_margin_seconds=float(reconciler_app.ANSWER_MARGIN_SECONDS),
        session_step_seconds=SESSION_STEP_SECONDS,
        max_requests_per_second=float(parameters["ReconcilerRequestsPerSecond"]["MaxValue"]),
        listing_cache_seconds=float(getattr(reconciler_app, "LISTING_CACHE_SECONDS", 0.0)),
    )


@dataclass(frozen=True)
class CadenceCase:
    sessions: int
    rate: float
    calls_open_session: int


def cadence_cases(defaults: Defaults) -> list[CadenceCase]:
    """Every size at the default rate, with both costs of a session with open orders; the
    largest also at the highest rate the template allows."""
    cases = [
        CadenceCase(sessions, defaults.requests_per_second, calls)
        for sessions in CADENCE_SESSIONS
        for calls in CALLS_OPEN_SESSION
    ]
    cases.append(
        CadenceCase(max(CADENCE_SESSIONS), defaults.max_requests_per_second, min(CALLS_OPEN_SESSION))
    )
    return cases


def cadence(case: CadenceCase, defaults: Defaults, minutes: int) -> dict[str, Any]:
    """Runs every ``interval`` minutes over ``minutes`` of a trading day. Each run orders the
    sessions with the real ``polling_order`` from the poll records the runs before it left, starts
    the next session only while ``session_step_seconds`` of its ``run_seconds`` remain (as the
    reconciler does), and spends ``calls / rate`` seconds on each session polled: the pacer's slot
    for each Kite call, inside which the session's few AWS requests fit (see the measured work
    per session)."""
    from kitehooks.orders.schedule import PollRecord, polling_order

    sessions, rate = case.sessions, case.rate
    rng = random.Random(SEED)  # noqa: S311 - a reproducible choice of sessions
    user_ids = [f"U{index:05d}" for index in range(sessions)]
    with_open = set(rng.sample(user_ids, round(sessions * OPEN_SHARE)))
    polls: dict[str, PollRecord] = {}
    polled_at: dict[str, list[float]] = {user_id: [] for user_id in user_ids}
    per_run: list[int] = []
    interval = defaults.interval_minutes * 60
    listed_at: float | None = None
    for run_start in range(0, minutes * 60, interval):
        # Postbacks keep coming for the sessions with open orders: each is urgent on its own too.
        touched = {user_id: run_start for user_id in with_open}
        # One warm container runs them all: it lists the sessions again once its listing is old.
        elapsed = 0.0
        if listed_at is None or run_start - listed_at >= defaults.listing_cache_seconds:
            elapsed, listed_at = _listing_seconds(sessions), run_start
        reached = 0
        for user_id in polling_order(user_ids, polls, touched):
            if defaults.run_seconds - elapsed < defaults.session_step_seconds:
                break
            calls = case.calls_open_session if user_id in with_open else CALLS_IDLE_SESSION
            elapsed += calls / rate
            reached += 1
            # The reconciler records each poll at its run's start time.
            polls[user_id] = PollRecord(user_id, run_start, user_id in with_open)
            polled_at[user_id].append(run_start / 60)
        per_run.append(reached)
    day_end = minutes
    figures: dict[str, Any] = {
        "sessions": sessions,
        "rate": rate,
        "calls_open_session": case.calls_open_session,
        "with_open_orders": len(with_open),
        "sessions_per_run": {"median": statistics.median(per_run), "min": min(per_run), "max": max(per_run)},
        "minutes_until_all_polled_once": _all_polled_once(polled_at),
    }
    for kind, members in (("open", with_open), ("idle", set(user_ids) - with_open)):
        gaps: list[float] = []
        never_again = 0
        for user_id in members:
            times = polled_at[user_id]
            gaps.extend(later - earlier for earlier, later in itertools.pairwise(times))
            if len(times) <= 1:
                never_again += 1
        tails = [day_end - polled_at[user_id][-1] for user_id in members if polled_at[user_id]]
        figures[kind] = {
            "median_gap_minutes": statistics.median(gaps) if gaps else None,
            "worst_gap_minutes": max(gaps) if gaps else None,
            # A session left after its last poll until the day's end: its gap is at least this.
            "longest_unpolled_at_close_minutes": max(tails, default=None),
            "polled_at_most_once": never_again,
            "never_polled": sum(1 for user_id in members if not polled_at[user_id]),
        }
    return figures


def _all_polled_once(polled_at: Mapping[str, list[float]]) -> float | None:
    if any(not times for times in polled_at.values()):
        return None
    return max(times[0] for times in polled_at.values())


def _listing_seconds(sessions: int) -> float:
    return math.ceil(sessions / LIST_PAGE_SIZE) * LIST_PAGE_SECONDS


def capacity(
    defaults: Defaults, rate: float, sessions: int, calls_open_session: int, listing: bool = False
) -> dict[str, float]:
    """How many sessions one run can poll, from the same rule the model applies; ``listing``: a
    run that lists the sessions first."""
    usable = defaults.run_seconds - (_listing_seconds(sessions) if listing else 0.0)
    # The last session starts with session_step_seconds left and its calls fit in them.
    usable -= defaults.session_step_seconds
    return {
        "open_sessions_per_run": max(0.0, usable) * rate / calls_open_session + 1,
        "idle_sessions_per_run": max(0.0, usable) * rate / CALLS_IDLE_SESSION + 1,
    }


# --------------------------------------------------------------------------------------------
# The report


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def render(results: Mapping[str, Any]) -> str:
    defaults = results["defaults"]
    machine = results["machine"]
    lines = [
        "# Reconciliation cost and cadence",
        "",
        f"`make bench` ({'quick run' if results['quick'] else 'full run'}), {results['date']}, on "
        f"{machine['cpu']} ({machine['cores']} cores, shared), Python {machine['python']}, "
        f"{machine['system']}. Kite: the project's simulator over HTTP; AWS: a moto server over HTTP.",
        "",
        "## 1. What reconciliation costs, per 1,000 orders",
        "",
        f"Each scenario, twice, on a fresh stack: {results['orders']} orders over {results['users']} "
        "users, each with a session; the postbacks Kite did not drop go through the postback "
        "function's handler in Kite's order (with OrderConfirmation=off they are not replayed: they "
        "write nothing the reconciler reads); then runs of ReconcilerFunction's own `run()` (the real "
        "Reconciler as the function wires it; only the pacing rate and the clock are the benchmark's) "
        "read the simulator's order book. "
        f"**A run every minute**: a day of {results['paced_minutes']} minutes on a simulated clock (the "
        "day's and the reconciler's), each minute every live order moving 0, 1 or 2 steps (2 in one "
        "minute of seven), then a run, and two more runs after the last move; the 60 s grace holds "
        "back a state of the last minute, so a lost state is looked at twice. **Catching up**: a "
        "whole day hours old, then one run (as after an outage), then one with nothing new.",
        "",
        "Figures are scaled to 1,000 orders: the emulator takes ~10-60 ms a request on this shared "
        f"machine, so {results['orders']} orders a scenario keep the benchmark near "
        f"{results['benchmark_seconds']:.0f} s (1,000 would take several minutes). A consumer drains "
        "the queue meanwhile, as a deployment's does (the emulator's FIFO send slows as its queue "
        "grows). Requests are counted where they are sent: Kite's at the simulator, AWS's by "
        "botocore's before-send event on the clients the functions use (retries included). Wall times "
        f"are measured with the Kite pacing rate at {results['bench_rate']:g} calls/s, so that the "
        "pacer never waits; the last column replays the same calls at the template's default of "
        f"{defaults['requests_per_second']:g} calls/s (each call starts one pacing interval after the "
        "previous one, or later when the work between them took longer).",
        "",
        f"**A run every minute** ({results['users']} sessions, so {results['users']} GET /orders a "
        "run whatever the orders). What the orders add to the runs, per 1,000 orders: the requests "
        "beyond those of a run with nothing new, and the Kite time their histories take at the "
        "default rate:",
        "",
        "| Scenario | runs | GET /orders/{id} | DynamoDB | SQS | states recovered | Kite time at "
        f"{defaults['requests_per_second']:g}/s (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in results["scenarios"].values():
        paced = scenario["paced"]
        figures = paced["order_driven_per_1000_orders"]
        lines.append(
            f"| {scenario['title']} | {paced['totals']['runs']} | {_number(figures['get_order_history'])} | "
            f"{_number(figures['dynamodb_requests'])} | {_number(figures['sqs_requests'])} | "
            f"{_number(figures['recovered'])} | {_number(figures['kite_seconds_at_default_rate'], 1)} |"
        )
    lines += [
        "",
        "**Catching up**: one run after the whole day, per 1,000 orders (its "
        f"{results['users']} GET /orders and per-session requests included):",
        "",
        "| Scenario | run | Kite calls | GET /orders | GET /orders/{id} | DynamoDB | SQS | "
        "Secrets Manager | states recovered | wall s (fast pacing) | wall s at "
        f"{defaults['requests_per_second']:g}/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cost_row(title: str, run: str, figures: Mapping[str, float]) -> str:
        return (
            f"| {title} | {run} | {_number(figures['kite_calls'])} | {_number(figures['get_orders'])} | "
            f"{_number(figures['get_order_history'])} | {_number(figures['dynamodb_requests'])} | "
            f"{_number(figures['sqs_requests'])} | {_number(figures['secretsmanager_requests'])} | "
            f"{_number(figures['recovered'])} | {_number(figures['wall_seconds'], 1)} | "
            f"{_number(figures['wall_seconds_at_default_rate'], 1)} |"
        )

    for scenario in results["scenarios"].values():
        catch_up = scenario["catch_up"]["per_1000_orders"]
        lines.append(cost_row(scenario["title"], "after the day", catch_up["first_run"]))
        lines.append(cost_row(scenario["title"], "next, nothing new", catch_up["second_run"]))
    quiet = results["scenarios"]["all_delivered"]["catch_up"]["second_run"]["aws"]["by_operation"]
    run_calls = defaults["requests_per_second"] * (
        defaults["run_seconds"] - defaults["session_step_seconds"] / 2
    )
    catch_up_calls = results["scenarios"]["dropped_20"]["catch_up"]["per_1000_orders"]["first_run"][
        "kite_calls"
    ]
    lines += [
        "",
        f"A run with nothing new, for {results['users']} sessions: "
        + ", ".join(f"{count} {operation}" for operation, count in quiet.items())
        + f" (AWS), and {results['users']} GET /orders (Kite): per session one GetSecretValue, one "
        "ledger Query and one PutItem of its poll record; per run two Queries, and the session list "
        "(ListSecrets, 100 a page) when the warm container's listing is older than "
        f"{defaults['listing_cache_seconds']:g} s. "
        "GET /orders is one per session per run: it grows with sessions and runs, not orders "
        f"({results['users']} sessions here).",
        "",
        "An order costs its history (GET /orders/{id}) when its book state is one no postback "
        "delivered (a lost postback; it is looked at again while Kite's time for it is within the "
        "grace) or when it has claims the book state alone does not confirm (it moved more than once "
        "since the last run: the first run after a whole day judges the whole day's claims at once). "
        "Each recovered state is one SQS send and its ledger write. OrderConfirmation=off keeps no "
        "record of what postbacks delivered and no claims: every state Kite shows is new to the "
        "reconciler, so an order costs its history in every run from its first move until its last "
        "state is past the grace (a state is within the grace at the first run that sees it), and "
        "each state is sent once more (SQS's deduplication window drops the copies within 5 "
        "minutes). Confirmation on is the cheaper mode for Kite: postbacks tell the reconciler what "
        "it need not look at.",
        "",
        f"At {defaults['requests_per_second']:g} calls/s a run's {defaults['run_seconds']:g} s hold "
        f"at most {run_calls:,.0f} Kite calls (a call is made only with "
        f"{defaults['session_step_seconds'] / 2:g} s left), so the {_number(catch_up_calls)} calls "
        "that catching up on 1,000 orders with lost postbacks needs are worked off over several runs: "
        "what a run sends and judges is recorded as it goes, and the sessions it did not reach come "
        "first in the next.",
        "",
        "## 2. The cadence each session gets",
        "",
        f"Model over a simulated clock: the real `orders/schedule.py` `polling_order` and the "
        f"reconciler's stop rule, with the template's defaults: a run every {defaults['interval_minutes']} "
        f"min, Timeout {defaults['timeout_seconds']:g} s less the {defaults['answer_margin_seconds']:g} s "
        f"answer margin, a session started only with {defaults['session_step_seconds']:g} s left, "
        f"{defaults['requests_per_second']:g} Kite calls/s. {OPEN_SHARE:.0%} of the sessions have open "
        "orders all day (and postbacks), and cost 1 Kite call a poll (GET /orders: every postback "
        "arrived and each order moved at most once since the last poll) or 2 (an order's history "
        f"too); the others cost {CALLS_IDLE_SESSION}. Each call takes its pacing slot (1/rate s); "
        "the session's AWS requests fit inside it (measured here: "
        f"{results['work_ms_per_session']:.0f} ms of work per session polled against the local "
        "emulator, Kite included, against the 200 ms slot at 5/s). Listing the sessions costs "
        f"{LIST_PAGE_SECONDS:g} s per {LIST_PAGE_SIZE} (assumed Secrets Manager latency), in the first "
        f"run and then every {defaults['listing_cache_seconds']:g} s (a warm container keeps the "
        f"listing that long). {results['cadence_minutes']} minutes of runs "
        f"({'a quick run' if results['quick'] else 'the default hours, 09:00-15:59 IST'}); "
        "the worst gaps include the opening minutes, when every session is new and first in line.",
        "",
        "| Sessions | rate | Kite calls per poll with open orders | sessions per run (median) | "
        "all polled once after (min) | open orders: median / worst gap (min) | no open orders: median "
        "/ worst gap (min) | no open orders: not polled again after the first poll |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["cadence"]:
        idle = row["sessions"] - row["with_open_orders"]
        lines.append(
            f"| {row['sessions']:,} | {row['rate']:g}/s | {row['calls_open_session']} | "
            f"{_number(row['sessions_per_run']['median'])} | "
            f"{_number(row['minutes_until_all_polled_once'])} | "
            f"{_number(row['open']['median_gap_minutes'])} / {_number(row['open']['worst_gap_minutes'])} | "
            f"{_number(row['idle']['median_gap_minutes'])} / {_number(row['idle']['worst_gap_minutes'])} | "
            f"{row['idle']['polled_at_most_once']:,} of {idle:,} |"
        )
    lines += ["", *results["verdict"], ""]
    return "\n".join(lines)


def verdict(rows: Sequence[Mapping[str, Any]], defaults: Defaults) -> list[str]:
    """Plain words on what the defaults can and cannot do, from the model's figures."""
    best = min(CALLS_OPEN_SESSION)
    at_default = [
        row
        for row in rows
        if row["rate"] == defaults.requests_per_second and row["calls_open_session"] == best
    ]
    largest = max(at_default, key=lambda row: row["sessions"])
    reach = capacity(defaults, defaults.requests_per_second, largest["sessions"], best)
    listing = capacity(defaults, defaults.requests_per_second, largest["sessions"], best, listing=True)
    words = [
        f"One run at the defaults polls at most ~{reach['idle_sessions_per_run']:,.0f} sessions "
        f"({defaults.requests_per_second:g} calls/s over a {defaults.run_seconds:g} s run, the last "
        f"{defaults.session_step_seconds:g} s starting none); a run that first lists "
        f"{largest['sessions']:,} sessions ~{listing['idle_sessions_per_run']:,.0f}.",
    ]
    for row in sorted(at_default, key=lambda row: row["sessions"]):
        gap = row["open"]["median_gap_minutes"]
        if gap is not None and gap <= defaults.interval_minutes:
            words.append(
                f"At {row['sessions']:,} sessions the defaults poll each session with open orders every "
                f"{_number(gap)} min (median, when each costs one call)."
            )
        else:
            words.append(
                f"At {row['sessions']:,} sessions ({row['with_open_orders']:,} with open orders) the "
                "defaults cannot poll every session with open orders each minute, even when each costs "
                f"one call: each is polled every {_number(gap)} min (median; worst "
                f"{_number(row['open']['worst_gap_minutes'])})."
            )
    words.append(
        "Sessions with open orders (or a postback since their last poll) come first, but every fourth "
        "place of a run goes to a session without open orders, least recently polled first, so these "
        "are still worked through when urgent sessions would fill every run; the last column counts "
        "those the day's runs did not reach again (a postback makes a session urgent at once)."
    )
    window = defaults.run_seconds - defaults.session_step_seconds
    words.append(
        f"What a user can change: ReconcilerRequestsPerSecond (up to {defaults.max_requests_per_second:g}; "
        "Kite's 10/s per api_key is shared with the app's own calls) raises a run's reach in proportion "
        "(the last row); a longer ReconcilerIntervalMinutes does not (the Timeout stays "
        f"{defaults.timeout_seconds:g} s, so fewer runs reach fewer sessions an hour). Polling "
        f"{largest['with_open_orders']:,} sessions with open orders every minute needs "
        f"{largest['with_open_orders']:,} Kite calls in a run's ~{window:g} s, "
        f"{largest['with_open_orders'] / window:.0f}/s: more than Kite allows one api_key, so beyond "
        "a few hundred active sessions the users have to be split over more than one Kite app "
        "(api_key), each with its own stack."
    )
    return words


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    from kitehooks.orders.settings import DEFAULT_REQUESTS_PER_SECOND

    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": QUICK,
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}",
        },
        "orders": ORDERS,
        "users": USERS,
        "paced_minutes": PACED_MINUTES,
        "bench_rate": BENCH_RATE,
    }
    with moto_server() as endpoint:
        _set_environment(endpoint)
        defaults = template_defaults()
        if defaults.requests_per_second != DEFAULT_REQUESTS_PER_SECOND:
            print(
                f"note: the template's rate ({defaults.requests_per_second:g}/s) differs from the "
                f"code's default ({DEFAULT_REQUESTS_PER_SECOND:g}/s); the template's is used"
            )
        results["defaults"] = {**dataclasses.asdict(defaults), "run_seconds": defaults.run_seconds}
        scenarios: dict[str, Any] = {}
        for scenario in SCENARIOS:
            measured: dict[str, Any] = {
                "title": scenario.title,
                "drop_share": scenario.drop_share,
                "order_confirmation": "on" if scenario.order_confirmation else "off",
                "paced": measure_paced(scenario, defaults.requests_per_second),
                "catch_up": measure_catch_up(scenario, defaults.requests_per_second),
            }
            measured["paced"]["order_driven_per_1000_orders"] = order_driven(
                measured["paced"], measured["catch_up"]["second_run"], defaults.requests_per_second
            )
            scenarios[scenario.name] = measured
            paced = measured["paced"]["totals"]
            print(
                f"measured {scenario.title}: a run every minute "
                f"{paced['wall_seconds']:.1f} s over {paced['runs']} runs; catching up "
                f"{measured['catch_up']['first_run']['wall_seconds']:.1f} s "
                f"({time.perf_counter() - started:.0f} s so far)",
                flush=True,
            )
        results["scenarios"] = scenarios
    minutes = TRADING_MINUTES
    rows = [cadence(case, defaults, minutes) for case in cadence_cases(defaults)]
    # What one poll of a session took here at BENCH_RATE, with nothing new: the second runs.
    seconds = [scenario["catch_up"]["second_run"]["wall_seconds"] for scenario in scenarios.values()]
    results["work_ms_per_session"] = 1000 * statistics.median(seconds) / USERS
    results["cadence_minutes"] = minutes
    results["cadence_model"] = {
        "open_share": OPEN_SHARE,
        "calls_open_session": CALLS_OPEN_SESSION,
        "calls_idle_session": CALLS_IDLE_SESSION,
        "list_page_seconds": LIST_PAGE_SECONDS,
        "list_page_size": LIST_PAGE_SIZE,
    }
    results["cadence"] = rows
    results["capacity"] = {
        f"{sessions} sessions, {calls} call(s) per poll with open orders": capacity(
            defaults, defaults.requests_per_second, sessions, calls
        )
        for sessions in CADENCE_SESSIONS
        for calls in CALLS_OPEN_SESSION
    }
    results["verdict"] = verdict(rows, defaults)
    results["benchmark_seconds"] = time.perf_counter() - started
    table = render(results)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "RECONCILE.md").write_text(table)
    (OUTPUT / "reconcile.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(table)
    print(f"({results['benchmark_seconds']:.0f} s; written to {OUTPUT / 'RECONCILE.md'} and reconcile.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
