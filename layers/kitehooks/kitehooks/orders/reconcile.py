"""The reconciler: every order state Kite's order book shows reaches the queue once, and every
verified postback is checked against Kite's own history of its order.

Kite sends each postback once and never retries; and it signs only ``order_id + order_timestamp``,
so a verified postback can still carry a status or quantity Kite never said. For each active
session, in the order :mod:`kitehooks.orders.schedule` gives:

1. the ledger's record of the user's orders (one Query), *then* ``GET /orders``: a claim read
   first belongs to a postback Kite had already sent, so the history read after shows its state;
2. an order has changed when its current state is an update state not yet delivered, or it has
   claims to judge. Only those cost a ``GET /orders/{order_id}``;
3. from the history, the states after the last one delivered are sent in order
   (:func:`kitehooks.orders.history.to_recover`): body = the order object (``GET /orders``'s when
   it is the current state, else the history entry), ``MessageGroupId`` = order_id,
   ``MessageDeduplicationId`` = the state's, attributes as a postback's with
   ``source=reconciler``; then recorded in the ledger (send, then record, as every source does);
4. each claim is judged (:func:`kitehooks.orders.history.judge`); an unconfirmed one is settled by
   a conditional write, and only the run that settled it raises ``Kite order update unconfirmed``.

Kite calls are paced (:class:`kitehooks.sessions.admin.Pacer`); a 429 holds the pacer and
retries the same call while the deadline allows. A TokenException ends nothing here: the session
goes to SessionFunction's ``check`` (asynchronously), which marks it expired (``token_invalid``),
and the run goes on. Any other failure for one session is logged and counted, and the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger

from kitehooks.clock import IST, kite_time
from kitehooks.deadline import Deadline, DeadlineExceeded
from kitehooks.kite import client as kite
from kitehooks.orders import events, queue
from kitehooks.orders.history import entry_time, judge, to_recover
from kitehooks.orders.ledger import Claim, LedgerOrder, LedgerUnavailable, OrderLedger
from kitehooks.orders.schedule import PollRecords, oldest_poll, polling_order
from kitehooks.orders.states import FINAL_STATUSES, OrderState, state_of_order
from kitehooks.sessions.admin import Pacer
from kitehooks.sessions.store import (
    KiteSession,
    SessionNotFound,
    SessionStore,
    SessionStoreError,
    valid_user_id,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from kitehooks.sessions.events import EventBridgePutEvents

logger = Logger(child=True)

T = TypeVar("T")

# A session is started only with this much of the run left: its GET /orders, a few histories,
# their sends and ledger writes. The ones after are left to the next run.
SESSION_STEP_SECONDS = 8.0
# Kite answered 429: no call from this run for this long, then the same call again.
RATE_LIMITED_PAUSE_SECONDS = 1.0
SQS_SEND_SECONDS = 4.0
# Kept back while an unconfirmed event is put: if EventBridge hangs, the claim it settled is
# still put back in time, so a later run announces it.
PUT_BACK_SECONDS = 4.0
# Users named only by postbacks (not in the session listing) a run looks at: user_id is not
# signed, so made-up ids must not crowd out the real sessions.
MAX_UNLISTED_USERS = 20
# Claims of one order judged in one run; more wait for the next runs (the ledger caps them too).
MAX_CLAIMS_PER_ORDER = 16
# The asynchronous invoke of SessionFunction's check: one attempt's timeouts and some room.
REPORT_DEAD_SECONDS = 5.0
DEFAULT_GRACE_SECONDS = 60.0


class OutOfTime(Exception):
    """The run's deadline leaves no room for the next step."""


@dataclass
class RunSummary:
    """What one run did: its answer, its log line and its metrics. Never a token."""

    sessions: int = 0
    polled: int = 0
    not_reached: int = 0
    inactive: int = 0
    token_invalid: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    kite_calls: int = 0
    rate_limited: int = 0
    orders_seen: int = 0
    histories: int = 0
    recovered: int = 0
    # Orders with a state left for a later run (Kite's time for it within the grace).
    waiting: int = 0
    confirmed: int = 0
    unconfirmed: int = 0
    events_not_sent: int = 0
    not_sent: int = 0
    # Orders skipped because the ledger refused or did not answer for them; the run goes on.
    orders_failed: int = 0

    def detail(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Reconciler:
    """One run's parts. ``report_dead`` hands a user whose token Kite refused to the check path."""

    store: SessionStore
    ledger: OrderLedger
    polls: PollRecords
    client: kite.KiteClient
    sqs: SQSClient
    queue_url: str
    events: EventBridgePutEvents
    report_dead: Callable[[str], None]
    deadline: Deadline
    pacer: Pacer
    now: datetime
    grace: timedelta = timedelta(seconds=DEFAULT_GRACE_SECONDS)
    # How the run lists sessions (the handler keeps Secrets Manager's listing for some minutes);
    # None: the store's listing, every run.
    list_sessions: Callable[[], list[str]] | None = None
    summary: RunSummary = field(default_factory=RunSummary)

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Every active session, most urgent first, until the deadline. Raises
        SessionStoreError or LedgerUnavailable when the run cannot even start."""
        with self.deadline.limit():
            listed = (self.list_sessions or self.store.user_ids)()
            polls = self.polls.load()
            day_start = self.now.astimezone(IST).replace(hour=0, minute=0, second=0, microsecond=0)
            touched = self.polls.postbacks_since(oldest_poll(listed, polls, day_start))
        # A user with postbacks and no session in the listing yet (a login since it was made) is
        # polled now; one with no session at all is skipped when its session is read.
        listed_users = set(listed)
        unlisted = sorted(
            (user_id for user_id in touched if user_id not in listed_users and valid_user_id(user_id)),
            key=lambda user_id: -touched[user_id],
        )[:MAX_UNLISTED_USERS]
        user_ids = listed_users | set(unlisted)
        ordered = polling_order(user_ids, polls, touched)
        self.summary.sessions = len(ordered)
        for index, user_id in enumerate(ordered):
            if self.deadline.remaining() < SESSION_STEP_SECONDS:
                self.summary.not_reached = len(ordered) - index
                break
            try:
                self._session(user_id)
            except OutOfTime:
                self.summary.not_reached = len(ordered) - index
                break
        logger.info("orders reconciled", extra=self.summary.detail())
        return self.summary

    def _session(self, user_id: str) -> None:
        try:
            with self.deadline.limit():
                session = self.store.get(user_id)
        except SessionNotFound:
            # Recorded, so that a user_id no session has (user_id is not signed) goes to the back.
            self._record_poll(user_id, open_orders=False)
            return
        except (SessionStoreError, DeadlineExceeded) as error:
            self._failed(user_id, str(error) or "Secrets Manager did not answer in time")
            return
        if not self._active(session):
            # Recorded too, so that sessions ended at 06:00 go to the back rather than being read
            # first by every run until their users log in again.
            self.summary.inactive += 1
            self._record_poll(user_id, open_orders=False)
            return
        try:
            open_orders = self._reconcile(session)
        except kite.KiteTokenError:
            logger.info("session found dead at Kite; handed to the check", extra={"kite_user_id": user_id})
            self.summary.token_invalid.append(user_id)
            try:
                with self.deadline.limit(REPORT_DEAD_SECONDS):
                    self.report_dead(user_id)
            except DeadlineExceeded:
                # The next run meets the same refusal and reports it again.
                logger.warning("dead session not reported in time", extra={"kite_user_id": user_id})
            self._record_poll(user_id, open_orders=False)
            return
        except kite.KiteError as error:
            self._failed(user_id, str(error))
            # Early again, but behind the sessions not tried yet: one failing user holds no one up.
            self._record_poll(user_id, open_orders=True)
            return
        except (LedgerUnavailable, DeadlineExceeded) as error:
            self._failed(user_id, str(error) or "DynamoDB did not answer in time")
            return
        self.summary.polled += 1
        self._record_poll(user_id, open_orders)

    def _record_poll(self, user_id: str, open_orders: bool) -> None:
        try:
            with self.deadline.limit():
                self.polls.record(user_id, self.now, open_orders)
        except (LedgerUnavailable, DeadlineExceeded) as error:
            # Only the order of later runs suffers: this session is polled early again.
            logger.warning("poll not recorded", extra={"kite_user_id": user_id, "reason": str(error)})

    def _active(self, session: KiteSession) -> bool:
        if session.status != "active" or not session.access_token:
            return False
        try:
            return datetime.fromisoformat(session.expires_at) > self.now
        except (ValueError, TypeError):  # not ISO 8601, or without an offset
            return True  # not ours to judge: Kite will say whether the token lives

    def _failed(self, user_id: str, reason: str) -> None:
        logger.warning("session not reconciled", extra={"kite_user_id": user_id, "reason": reason})
        self.summary.failed.append(user_id)

    # -- one session -------------------------------------------------------------------------

    def _reconcile(self, session: KiteSession) -> bool:
        """Reconcile one user's orders; True when any is still open (poll it early next run)."""
        user_id, token = session.user_id, session.access_token
        with self.deadline.limit():
            known = self.ledger.orders_of(user_id)
        book = self._kite(partial(self.client.orders, token))
        self.summary.orders_seen += len(book)
        open_orders = False
        in_book: set[str] = set()
        for order in book:
            if isinstance(order.get("order_id"), str):
                in_book.add(order["order_id"])  # even one whose state cannot be read
            current = state_of_order(order)
            if current is None:
                continue
            if order.get("status") not in FINAL_STATUSES:
                open_orders = True
            record = known.get(current.order_id, LedgerOrder(current.order_id, frozenset(), frozenset()))
            try:
                if self._order(user_id, token, order, current, record):
                    open_orders = True
            except (LedgerUnavailable, DeadlineExceeded) as error:
                # One order's ledger item failing (even one grown past DynamoDB's item limit)
                # holds up neither this user's other orders nor anyone else's.
                self.summary.orders_failed += 1
                logger.warning(
                    "order not reconciled",
                    extra={
                        "kite_user_id": user_id,
                        "order_id": current.order_id,
                        "reason": str(error) or "DynamoDB did not answer in time",
                    },
                )
        self._judge_missing(user_id, known, in_book)
        return open_orders

    def _order(
        self, user_id: str, token: str, order: Mapping[str, Any], current: OrderState, record: LedgerOrder
    ) -> bool:
        """One order of the book; True when a state was left for a later run."""
        changed = current.is_update and current.key not in record.delivered
        if not (changed or record.claims):
            return False
        if changed and not record.claims and self._within_grace(order):
            # Kite's time for this state is within the grace: its postback may be in flight,
            # and recovery would stop at it anyway. Its history waits for a later run, which
            # saves a Kite call for every order that moved since the last run.
            self.summary.waiting += 1
            return True
        if not changed and all(claim.state_key == current.key for claim in record.claims):
            # The book shows the claimed state now: confirmed without the order's history.
            self._settle_confirmed(user_id, current.order_id, record.claims)
            return False
        history = self._kite(partial(self.client.order_history, token, current.order_id))
        self.summary.histories += 1
        # Judged first: a state Kite never said leaves what counts as delivered before any
        # recovery reads it (a forged COMPLETE must not hide the real one).
        never_said = self._judge(user_id, order, record.claims, history)
        return self._recover(user_id, order, current, history, record.delivered - never_said)

    def _within_grace(self, order: Mapping[str, Any]) -> bool:
        at = entry_time(order)
        return at is not None and at > self.now - self.grace

    def _recover(
        self,
        user_id: str,
        order: Mapping[str, Any],
        current: OrderState,
        history: list[dict[str, Any]],
        delivered: frozenset[str],
    ) -> bool:
        """Send what the consumer has not seen; True when a state was left for a later run."""
        sends, waiting = to_recover(history, delivered, self.now, self.grace)
        if sends:
            # Read again just before sending: a postback recorded since the ledger was read (a
            # later state) makes these superseded, and the queue must not see the order go back.
            with self.deadline.limit():
                latest = self.ledger.delivered(user_id, current.order_id)
            sends, waiting = to_recover(history, delivered | latest, self.now, self.grace)
        if waiting:
            self.summary.waiting += 1
        sent: list[OrderState] = []
        try:
            for found in sends:
                body = order if found.state == current else found.entry
                self._send(user_id, found.state, body)
                sent.append(found.state)
        except _NotSent as error:
            # Later states stay unsent too: they must not overtake this one.
            logger.error(
                "recovered order state not sent",
                extra={"kite_user_id": user_id, "order_id": current.order_id, "reason": str(error)},
            )
            self.summary.not_sent += 1
            waiting = True
        finally:
            if sent:
                with self.deadline.limit():
                    self.ledger.record_delivered(user_id, current.order_id, sent)
                self.summary.recovered += len(sent)
        return waiting

    def _send(self, user_id: str, state: OrderState, body: Mapping[str, Any]) -> None:
        try:
            with self.deadline.limit(SQS_SEND_SECONDS):
                queue.publish_recovered(self.sqs, self.queue_url, state, body, user_id)
        except DeadlineExceeded:
            raise _NotSent("SQS did not answer in time") from None
        except queue.QueueUnavailable as error:
            raise _NotSent(str(error)) from None

    def _settle_confirmed(self, user_id: str, order_id: str, claims: frozenset[Claim]) -> None:
        for claim in sorted(claims):
            with self.deadline.limit():
                if self.ledger.settle_claim(user_id, order_id, claim):
                    self.summary.confirmed += 1

    def _judge(
        self,
        user_id: str,
        order: Mapping[str, Any],
        claims: frozenset[Claim],
        history: list[dict[str, Any]],
    ) -> frozenset[str]:
        """Judge each claim; the state keys Kite never said (their claims unconfirmed)."""
        order_id = str(order["order_id"])
        never_said: set[str] = set()
        # Bounded: a flood of replayed postbacks with made-up quantities must not take the run.
        for claim in sorted(claims)[:MAX_CLAIMS_PER_ORDER]:
            verdict = judge(claim, history)
            if verdict == "wait":
                continue
            if verdict == "confirmed":
                with self.deadline.limit():
                    if self.ledger.settle_claim(user_id, order_id, claim):
                        self.summary.confirmed += 1
                continue
            never_said.add(claim.state_key)
            self._unconfirmed(user_id, order_id, claim, order, "state_not_in_history")
        return frozenset(never_said)

    def _judge_missing(self, user_id: str, known: Mapping[str, LedgerOrder], in_book: set[str]) -> None:
        """Claims of orders the user's book does not have. The ledger was read before the book,
        so a genuine order of today is in it: a claim of today's order that is not (a postback
        whose unsigned user_id was changed) is unconfirmed. Earlier days' claims are left to the
        ledger's TTL: today's book cannot speak for them."""
        today = self.now.astimezone(IST).date()
        for order_id, record in known.items():
            if order_id in in_book:
                continue
            for claim in sorted(record.claims)[:MAX_CLAIMS_PER_ORDER]:
                claimed_at = kite_time(claim.order_timestamp)
                # Today's, and past the grace: Kite's book has had time to show the order.
                if claimed_at is None or claimed_at.date() != today or claimed_at > self.now - self.grace:
                    continue
                try:
                    self._unconfirmed(user_id, order_id, claim, {}, "order_not_in_book")
                except (LedgerUnavailable, DeadlineExceeded) as error:
                    self.summary.orders_failed += 1
                    logger.warning(
                        "order not reconciled",
                        extra={"kite_user_id": user_id, "order_id": order_id, "reason": str(error)},
                    )

    def _unconfirmed(
        self, user_id: str, order_id: str, claim: Claim, order: Mapping[str, Any], reason: str
    ) -> None:
        """Settle a claim Kite never said (its state leaves ``delivered`` too) and announce it,
        once: only the run whose conditional write settled it."""
        with self.deadline.limit():
            if not self.ledger.settle_claim(user_id, order_id, claim, unconfirmed=True):
                return  # another run judged it first
        self.summary.unconfirmed += 1
        kite_state = state_of_order(order)
        update = events.UnconfirmedUpdate(
            order_id=order_id,
            user_id=user_id,
            claimed_status=claim.status,
            claimed_filled_quantity=claim.filled_quantity,
            kite_status=str(order.get("status") or ""),
            kite_filled_quantity=None if kite_state is None else kite_state.filled_quantity,
            reason=reason,
        )
        logger.warning(
            "order update unconfirmed",
            extra={"kite_user_id": user_id, "order_id": order_id, "claimed_status": claim.status},
        )
        if events.put_unconfirmed(self.events, self.deadline, update, self.now, keep=PUT_BACK_SECONDS):
            return
        self.summary.events_not_sent += 1
        # Put the claim back: a later run judges it again and retries the event.
        try:
            with self.deadline.limit():
                self.ledger.record_delivered(
                    user_id, order_id, [OrderState(order_id, claim.status, claim.filled_quantity)], [claim]
                )
        except (LedgerUnavailable, DeadlineExceeded) as error:
            logger.error(
                "unconfirmed order update neither announced nor kept for a later run",
                extra={
                    "kite_user_id": user_id,
                    "order_id": order_id,
                    "claimed_status": claim.status,
                    "claimed_filled_quantity": claim.filled_quantity,
                    "reason": str(error) or "DynamoDB did not answer in time",
                },
            )

    # -- Kite --------------------------------------------------------------------------------

    def _kite(self, call: Callable[[], T]) -> T:
        """One Kite call, paced; after a 429, the same call again once the pacer allows."""
        while True:
            if self.deadline.remaining() < SESSION_STEP_SECONDS / 2:
                raise OutOfTime
            self.pacer.wait()
            self.summary.kite_calls += 1
            try:
                return call()
            except kite.KiteError as error:
                if error.http_status != 429:
                    raise
                self.summary.rate_limited += 1
                self.pacer.hold(RATE_LIMITED_PAUSE_SECONDS)


class _NotSent(Exception):
    """SQS did not take a recovered state; the message names no value."""
