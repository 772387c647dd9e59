"""What the session function does to stored sessions: expire them at 06:00 IST, log a user out,
renew with a refresh token. No public route reaches it; it runs on a schedule or by direct invoke.

Two kinds of failure, answered differently:

- the caller asked for something that cannot be done (no such session, no refresh token, Kite
  refused the token): a :class:`Result` with ``ok`` false, for the caller to read. Retrying the same
  request could not help, and it is no fault of the deployment, so no alarm should fire;
- kitehooks could not do its part (Secrets Manager or Kite failing, a session that could not be
  expired): :class:`SessionActionFailed` is raised, so Lambda counts an error, retries an
  asynchronous (scheduled) invocation, and the alarms see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aws_lambda_powertools import Logger

from kitehooks import kite
from kitehooks.credentials import ApiCredentials
from kitehooks.sessions import SessionNotFound, SessionStore, SessionStoreError, ended, renewed

logger = Logger(child=True)

Action = Literal["expire", "logout", "renew"]
ACTIONS: tuple[Action, ...] = ("expire", "logout", "renew")

# How many user ids a failure message names; the log lines name each one.
_NAMED_IN_MESSAGE = 10


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


def expire_due(store: SessionStore, now: datetime) -> Result:
    """Mark every active session whose expires_at has passed as expired.

    Raises SessionStoreError when the sessions cannot be listed, and SessionActionFailed when any
    session could not be expired (after trying every other one). Running it again is harmless.
    """
    expired: list[str] = []
    failed: list[str] = []
    for user_id in store.user_ids():
        try:
            session = store.get(user_id)
            if session.status == "active" and datetime.fromisoformat(session.expires_at) <= now:
                store.put(ended(session, "expired", now))
                expired.append(user_id)
        except SessionNotFound:
            continue  # deleted since it was listed: nothing left to expire
        except (SessionStoreError, ValueError) as error:
            logger.error("could not expire a session", extra={"kite_user_id": user_id, "reason": str(error)})
            failed.append(user_id)
    logger.info("sessions expired", extra={"expired": len(expired), "failed": len(failed)})
    if failed:
        named = ", ".join(failed[:_NAMED_IN_MESSAGE]) + (", ..." if len(failed) > _NAMED_IN_MESSAGE else "")
        raise SessionActionFailed(
            f"could not expire {len(failed)} session(s) ({named}); {len(expired)} expired"
        )
    return Result(True, {"expired": expired, "failed": failed})


def logout(store: SessionStore, client: kite.KiteClient, user_id: str, now: datetime) -> Result:
    """End the session at Kite and mark it revoked. Kite's refusal of a dead token is no failure."""
    try:
        session = store.get(user_id)
    except SessionNotFound as error:
        return Result(False, {"error": str(error)})
    if session.access_token:
        try:
            client.invalidate_access_token(session.access_token)
        except kite.KiteTokenError:
            pass  # already expired or logged out at Kite: the goal is reached
        except kite.KiteError as error:
            if _refused(error):
                return Result(False, {"error": f"Kite refused to log the session out: {error}"})
            # Still live at Kite, so not marked revoked: a retry can finish the job.
            raise SessionActionFailed(f"Kite did not log out the session of {user_id}: {error}") from None
    store.put(ended(session, "revoked", now))
    return Result(True, {"user_id": user_id, "status": "revoked"})


def renew(
    store: SessionStore, client: kite.KiteClient, credentials: ApiCredentials, user_id: str, now: datetime
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
    store.put(fresh)
    return Result(True, {"user_id": user_id, "status": "active", "expires_at": fresh.expires_at})
