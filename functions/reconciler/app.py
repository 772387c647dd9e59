"""Reconcile every active session's orders with Kite's order book (no public route).

Runs on the market-hours schedule and on demand (any event: ``{}``). Answers the run's summary
(counts and user ids, never a token). Each state Kite's book shows and no postback delivered is
sent to the order-updates queue with ``source=reconciler``; each verified postback Kite's history
contradicts raises ``Kite order update unconfirmed``. See ``kitehooks.orders.reconcile``.

Fails (so Lambda counts an error and the alarm sees it) only when the run cannot start
(configuration, credentials, the session list or the ledger) or an unconfirmed update could not
be announced; one session's Kite error is logged and counted, and the run goes on.
"""

from __future__ import annotations

import time
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from kitehooks import aws, clock
from kitehooks.client import report_dead_session
from kitehooks.config import ConfigurationError
from kitehooks.credentials import CredentialsUnavailable, api_credentials
from kitehooks.deadline import Deadline, DeadlineExceeded
from kitehooks.kite.client import KiteClient
from kitehooks.orders.ledger import LedgerUnavailable, OrderLedger
from kitehooks.orders.reconcile import Reconciler, RunSummary
from kitehooks.orders.schedule import PollRecords
from kitehooks.orders.settings import reconciler_settings
from kitehooks.sessions.admin import Pacer
from kitehooks.sessions.store import SessionStore, SessionStoreError

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics()

# Every call ends this long before Lambda would stop the function, so the summary, its log line
# and its metrics always leave.
ANSWER_MARGIN_SECONDS = 5.0
# Secrets Manager lists 100 sessions a call: at thousands of sessions the listing would take a
# good part of every run. A warm container keeps it this long; a user who logged in meanwhile is
# polled as soon as a postback of theirs is recorded, else from the next listing.
LISTING_CACHE_SECONDS = 300.0
# session prefix -> (monotonic time listed, user ids)
_listing: dict[str, tuple[float, list[str]]] = {}


class ReconcileFailed(RuntimeError):
    """The run could not start, or an unconfirmed update was not announced. Names no token."""


def _listed_sessions(store: SessionStore, prefix: str) -> list[str]:
    cached = _listing.get(prefix)
    if cached is not None and time.monotonic() - cached[0] < LISTING_CACHE_SECONDS:
        return cached[1]
    user_ids = store.user_ids()
    _listing[prefix] = (time.monotonic(), user_ids)
    return user_ids


def run(deadline: Deadline) -> RunSummary:
    settings = reconciler_settings()
    try:
        with deadline.limit():
            credentials = api_credentials()
    except DeadlineExceeded:
        raise CredentialsUnavailable("could not read the credentials secret in time") from None
    dynamodb = aws.dynamodb_client()

    def report_dead(user_id: str) -> None:
        if settings.session_function:
            report_dead_session(user_id, settings.session_function)

    store = SessionStore(aws.secretsmanager_client(), settings.session_prefix)
    reconciler = Reconciler(
        store=store,
        ledger=OrderLedger(dynamodb, settings.order_ledger_table),
        polls=PollRecords(dynamodb, settings.order_ledger_table),
        client=KiteClient.from_settings(settings.kite, credentials.api_key, deadline=deadline),
        sqs=aws.sqs_client(),
        queue_url=settings.queue_url,
        events=aws.events_client(),
        report_dead=report_dead,
        deadline=deadline,
        pacer=Pacer(settings.requests_per_second),
        now=clock.utc_now(),
        grace=timedelta(seconds=settings.grace_seconds),
        list_sessions=partial(_listed_sessions, store, settings.session_prefix),
    )
    return reconciler.run()


def _metrics(summary: RunSummary) -> dict[str, int]:
    return {
        "SessionsPolled": summary.polled,
        "SessionsNotReached": summary.not_reached,
        "SessionsFailed": len(summary.failed),
        "KiteCalls": summary.kite_calls,
        "KiteRateLimited": summary.rate_limited,
        "OrderStatesRecovered": summary.recovered,
        "OrderUpdateUnconfirmed": summary.unconfirmed,
        "OrderEventNotSent": summary.events_not_sent,
        "OrdersNotReconciled": summary.orders_failed,
    }


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    try:
        summary = run(Deadline.from_context(context, ANSWER_MARGIN_SECONDS))
    except (ConfigurationError, CredentialsUnavailable, SessionStoreError, LedgerUnavailable) as error:
        logger.error("reconciliation failed", extra={"reason": str(error)})
        raise ReconcileFailed(f"reconciliation failed: {error}") from None
    except DeadlineExceeded:
        logger.error("reconciliation failed", extra={"reason": "no time left to start"})
        raise ReconcileFailed("reconciliation failed: no time left to start") from None
    for name, value in _metrics(summary).items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    if summary.events_not_sent:
        raise ReconcileFailed(
            f"{summary.events_not_sent} unconfirmed order update(s) not announced; a later run retries"
        )
    return summary.detail()
