"""What the session function does to stored sessions: expire them at 06:00 IST, check them at
Kite, log a user out, renew with a refresh token, answer a session's status. No public route
reaches it; it runs on a schedule or by direct invoke.

Every change to a stored session is a compare-and-swap on the version read
(:meth:`SessionStore.update`): a login stored meanwhile is never overwritten nor marked ended,
and the decision is taken again on the newer version. A session that ends is announced with a
``Kite session ended`` event after its write.

Two kinds of failure, answered differently:

- the caller asked for something that cannot be done (no such session, no refresh token, Kite
  refused the token): a :class:`Result` with ``ok`` false, for the caller to read. Retrying the same
  request could not help, and it is no fault of the deployment, so no alarm should fire;
- kitehooks could not do its part (Secrets Manager or Kite failing, a session that could not be
  expired, an event that could not be sent by a scheduled run): :class:`SessionActionFailed` is
  raised, so Lambda counts an error, retries an asynchronous (scheduled) invocation, and the
  alarms see it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from aws_lambda_powertools import Logger

from kitehooks.credentials import ApiCredentials
from kitehooks.deadline import Deadline, DeadlineExceeded
from kitehooks.kite import client as kite
from kitehooks.sessions.events import EndReason, SessionEvents, session_ended, session_started
from kitehooks.sessions.store import (
    KiteSession,
    SessionNotFound,
    SessionStore,
    SessionStoreError,
    ended,
    renewed,
)

logger = Logger(child=True)

Action = Literal["expire", "check", "logout", "renew", "status"]
ACTIONS: tuple[Action, ...] = get_args(Action)

# How many user ids a failure message names; the log lines name each one.
_NAMED_IN_MESSAGE = 10
# A step on one session (read it, ask Kite, write it, announce it) starts only with this much of
# the invocation left; the sessions after that are reported as not reached.
SESSION_STEP_SECONDS = 12.0
# Kite answers 429 beyond 10 requests/s per api_key: after one, give the app's own calls room.
RATE_LIMITED_PAUSE_SECONDS = 1.0
# The market-hours schedule's interval: consecutive check runs take consecutive windows of sessions.
CHECK_INTERVAL_SECONDS = 15 * 60


class SessionActionFailed(RuntimeError):
    """kitehooks could not do its part of the action. The message names no token."""


@dataclass(frozen=True, slots=True)
class Result:
    """The answer of one invocation: JSON-safe, never a token."""

    ok: bool
    detail: dict[str, Any]


def _refused(error: kite.KiteError) -> bool:
    """Kite answered and said no: asking again cannot help. Anything else may pass on a retry."""
    return isinstance(error, (kite.KiteTokenError, kite.KiteInputError))


def _named(user_ids: list[str]) -> str:
    more = ", ..." if len(user_ids) > _NAMED_IN_MESSAGE else ""
    return ", ".join(user_ids[:_NAMED_IN_MESSAGE]) + more


def _listed(store: SessionStore, deadline: Deadline) -> list[str]:
    """Every user with a session; a listing that outlasts the deadline fails the run."""
    try:
        with deadline.limit():
            return store.user_ids()
    except DeadlineExceeded:
        raise SessionStoreError("could not list sessions in time") from None


def _due(session: KiteSession, now: datetime) -> bool:
    return datetime.fromisoformat(session.expires_at) <= now


class Pacer:
    """At most ``per_second`` Kite calls a second from this run.

    Kite allows 10 requests/s per api_key, shared with the app's own calls (orders, the
    reconciler, users' code): a check run keeps well under it.
    """

    def __init__(
        self,
        per_second: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.per_second = per_second
        self._interval = 1.0 / per_second
        self._sleep = sleep
        self._clock = clock
        self._next = 0.0

    def wait(self) -> None:
        now = self._clock()
        if now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self._interval

    def hold(self, seconds: float) -> None:
        """No call before ``seconds`` from now (after Kite said 429)."""
        self._next = max(self._next, self._clock() + seconds)


@dataclass
class _Run:
    """What a run over sessions did, for its answer and its failure message."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)


def _announce_end(
    events: SessionEvents, before: KiteSession, after: KiteSession, reason: EndReason, now: datetime
) -> None:
    # Only an active session ends: logging out one already expired changes no one's plans.
    if before.status == "active":
        events.send(session_ended(after.user_id, after.status, reason, now))


def expire_due(store: SessionStore, events: SessionEvents, deadline: Deadline, now: datetime) -> Result:
    """Mark every active session whose expires_at has passed as expired, and announce each.

    Raises SessionStoreError when the sessions cannot be listed, and SessionActionFailed when any
    session could not be expired or announced (after trying every other one). Running it again
    is harmless.
    """
    run = _Run()

    def expire(session: KiteSession) -> KiteSession | None:
        return ended(session, "expired", now) if session.status == "active" and _due(session, now) else None

    sent_before = events.not_sent
    for user_id in _listed(store, deadline):
        try:
            with deadline.limit():
                before, after = store.update(user_id, expire)
        except SessionNotFound:
            continue  # deleted since it was listed: nothing left to expire
        except (SessionStoreError, ValueError, DeadlineExceeded) as error:
            reason = str(error) or "no time left"
            logger.error("could not expire a session", extra={"kite_user_id": user_id, "reason": reason})
            run.failed.append(user_id)
            continue
        if after is not None:
            run.done.append(user_id)
            _announce_end(events, before, after, "expired", now)
    not_sent = events.not_sent - sent_before
    logger.info(
        "sessions expired",
        extra={"expired": len(run.done), "failed": len(run.failed), "events_not_sent": not_sent},
    )
    if run.failed:
        raise SessionActionFailed(
            f"could not expire {len(run.failed)} session(s) ({_named(run.failed)}); {len(run.done)} expired"
        )
    if not_sent:
        raise SessionActionFailed(f"{len(run.done)} session(s) expired but {not_sent} event(s) not sent")
    return Result(True, {"expired": run.done, "failed": run.failed})


def check(
    store: SessionStore,
    client: kite.KiteClient,
    events: SessionEvents,
    deadline: Deadline,
    pacer: Pacer,
    now: datetime,
    user_id: str | None = None,
) -> Result:
    """Ask Kite (``GET /user/profile``) whether each active session's token is alive.

    A TokenException marks the session expired (reason ``token_invalid``) and announces it. Any
    other Kite error leaves the session as it is and is reported under ``unverified``; sessions
    the deadline left no time for are reported under ``not_reached``. Raises SessionActionFailed
    when a dead session could not be marked or announced.
    """
    if user_id is not None:
        try:
            store.read(user_id)
        except SessionNotFound as error:
            return Result(False, {"error": str(error)})
        user_ids = [user_id]
    else:
        user_ids = _in_turn(_listed(store, deadline), pacer, deadline, now)

    run = _Run()
    alive = 0
    inactive = 0
    unverified: list[dict[str, str]] = []
    not_reached: list[str] = []
    sent_before = events.not_sent
    for index, current in enumerate(user_ids):
        if deadline.remaining() < SESSION_STEP_SECONDS:
            not_reached = user_ids[index:]
            break
        try:
            with deadline.limit():
                session = store.get(current)
        except SessionNotFound:
            continue
        except (SessionStoreError, DeadlineExceeded) as error:
            logger.error("could not read a session", extra={"kite_user_id": current, "reason": str(error)})
            run.failed.append(current)
            continue
        if session.status != "active" or not session.access_token:
            inactive += 1
            continue
        pacer.wait()
        try:
            client.profile(session.access_token)
        except kite.KiteTokenError:
            outcome = _mark_dead(store, events, deadline, current, session.access_token, now)
            if outcome == "expired":
                run.done.append(current)
            elif outcome == "superseded":
                run.superseded.append(current)
            else:
                run.failed.append(current)
            continue
        except kite.KiteError as error:
            if error.http_status == 429:
                pacer.hold(RATE_LIMITED_PAUSE_SECONDS)
            logger.warning(
                "session not verified at Kite", extra={"kite_user_id": current, "reason": str(error)}
            )
            unverified.append({"user_id": current, "reason": str(error)})
            continue
        alive += 1

    not_sent = events.not_sent - sent_before
    detail: dict[str, Any] = {
        "alive": alive,
        "expired": run.done,
        "superseded": run.superseded,
        "inactive": inactive,
        "unverified": unverified,
        "not_reached": not_reached,
        "failed": run.failed,
    }
    logger.info(
        "sessions checked",
        extra={
            "alive": alive,
            "expired": len(run.done),
            "unverified": len(unverified),
            "not_reached": len(not_reached),
            "failed": len(run.failed),
            "events_not_sent": not_sent,
        },
    )
    if run.failed:
        raise SessionActionFailed(
            f"could not check {len(run.failed)} session(s) ({_named(run.failed)}); {len(run.done)} expired"
        )
    if not_sent:
        raise SessionActionFailed(f"{len(run.done)} session(s) expired but {not_sent} event(s) not sent")
    return Result(True, detail)


def _in_turn(user_ids: list[str], pacer: Pacer, deadline: Deadline, now: datetime) -> list[str]:
    """The sessions in the order this run checks them.

    When a run cannot reach them all, each run starts where the window of the run before it
    (one schedule interval earlier) ended, so every session is checked every few runs rather
    than the first ones every time.
    """
    capacity = max(1, int(pacer.per_second * max(deadline.remaining() - SESSION_STEP_SECONDS, 0.0)))
    if len(user_ids) <= capacity:
        return user_ids
    start = (int(now.timestamp()) // CHECK_INTERVAL_SECONDS * capacity) % len(user_ids)
    return user_ids[start:] + user_ids[:start]


def _mark_dead(
    store: SessionStore,
    events: SessionEvents,
    deadline: Deadline,
    user_id: str,
    dead_access_token: str,
    now: datetime,
) -> Literal["expired", "superseded", "failed"]:
    """Mark the session expired if it still holds the token Kite refused."""

    def expire(session: KiteSession) -> KiteSession | None:
        # A newer login holds another token: it is alive as far as anyone knows.
        if session.status == "active" and session.access_token == dead_access_token:
            return ended(session, "expired", now)
        return None

    try:
        with deadline.limit():
            before, after = store.update(user_id, expire)
    except SessionNotFound:
        return "superseded"
    except (SessionStoreError, DeadlineExceeded) as error:
        logger.error(
            "could not mark a dead session expired",
            extra={"kite_user_id": user_id, "reason": str(error) or "no time left"},
        )
        return "failed"
    if after is None:
        return "superseded"
    logger.info("session found dead at Kite", extra={"kite_user_id": user_id})
    _announce_end(events, before, after, "token_invalid", now)
    return "expired"


def logout(
    store: SessionStore, client: kite.KiteClient, events: SessionEvents, user_id: str, now: datetime
) -> Result:
    """End the session at Kite (access and refresh token) and mark it revoked.

    Kite's refusal of a dead token is no failure: the goal is reached. When a login stored a
    newer session meanwhile, the tokens read were ended at Kite and the newer session is kept.
    """
    try:
        session = store.get(user_id)
    except SessionNotFound as error:
        return Result(False, {"error": str(error)})
    if session.status == "revoked" and not (session.access_token or session.refresh_token):
        return Result(True, {"user_id": user_id, "status": "revoked"})  # nothing left to end
    for kind, token, end in (
        ("access", session.access_token, client.invalidate_access_token),
        ("refresh", session.refresh_token, client.invalidate_refresh_token),
    ):
        if not token:
            continue
        try:
            end(token)
        except kite.KiteTokenError:
            pass  # already expired or revoked at Kite
        except kite.KiteError as error:
            if _refused(error):
                return Result(False, {"error": f"Kite refused to end the {kind} token: {error}"})
            # Still live at Kite, so not marked revoked: a retry can finish the job.
            raise SessionActionFailed(f"Kite did not log out the session of {user_id}: {error}") from None

    def revoke(current: KiteSession) -> KiteSession | None:
        same = (current.access_token, current.refresh_token) == (session.access_token, session.refresh_token)
        return ended(current, "revoked", now) if same else None

    before, after = store.update(user_id, revoke)
    if after is None:
        return Result(
            False,
            {
                "error": f"a newer login of {user_id} was stored meanwhile and is kept; "
                "invoke logout again to end it",
                "user_id": user_id,
                "status": before.status,
            },
        )
    _announce_end(events, before, after, "revoked", now)
    return Result(True, {"user_id": user_id, "status": "revoked"})


def renew(
    store: SessionStore,
    client: kite.KiteClient,
    events: SessionEvents,
    credentials: ApiCredentials,
    user_id: str,
    now: datetime,
) -> Result:
    """A new access token from the refresh token (approved platforms only)."""
    try:
        session = store.get(user_id)
    except SessionNotFound as error:
        return Result(False, {"error": str(error)})
    if session.status == "revoked" or not session.refresh_token:
        return Result(
            False, {"error": f"the session of {user_id} has no refresh token: the user must log in"}
        )
    try:
        data = client.renew_access_token(session.refresh_token, credentials.api_secret)
    except kite.KiteError as error:
        if _refused(error):
            return Result(False, {"error": f"Kite did not renew the session: {error}"})
        raise SessionActionFailed(f"Kite did not renew the session of {user_id}: {error}") from None
    fresh = renewed(
        session,
        access_token=str(data["access_token"]),
        public_token=str(data.get("public_token") or ""),
        refresh_token=str(data.get("refresh_token") or ""),
        now=now,
    )

    def renew_read(current: KiteSession) -> KiteSession | None:
        same = (current.access_token, current.refresh_token) == (session.access_token, session.refresh_token)
        return fresh if same else None

    before, after = store.update(user_id, renew_read)
    if after is None:
        # A login won: the token just renewed serves nothing, so it should not stay live.
        try:
            client.invalidate_access_token(fresh.access_token)
        except kite.KiteError as error:
            logger.warning("could not end the unused renewed token", extra={"kind": type(error).__name__})
        return Result(
            False,
            {"error": f"a newer login of {user_id} was stored meanwhile and is kept", "user_id": user_id},
        )
    if before.status != "active":
        events.send(session_started(after, now))
    return Result(True, {"user_id": user_id, "status": "active", "expires_at": after.expires_at})


def status(store: SessionStore, user_id: str, now: datetime) -> Result:
    """The session's status, expires_at and login_time; never a token.

    An active session past its expires_at is answered ``expired``: Kite has ended it, whether or
    not the 06:00 run has marked it yet.
    """
    try:
        session = store.get(user_id)
    except SessionNotFound:
        return Result(True, {"user_id": user_id, "status": "missing", "expires_at": None, "login_time": None})
    try:
        past_expiry = _due(session, now)
    except ValueError:
        past_expiry = False  # not an ISO time: answer what is stored
    current = "expired" if session.status == "active" and past_expiry else session.status
    return Result(
        True,
        {
            "user_id": user_id,
            "status": current,
            "expires_at": session.expires_at,
            "login_time": session.login_time,
        },
    )
