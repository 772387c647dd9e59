"""What the session function does to stored sessions: expire them at 06:00 IST, log a user out,
renew with a refresh token. No public route reaches it; it runs on a schedule or by direct invoke.
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


@dataclass(frozen=True, slots=True)
class Result:
    """The answer of one invocation: JSON-safe, never a token."""

    ok: bool
    detail: dict[str, Any]


def expire_due(store: SessionStore, now: datetime) -> Result:
    """Mark every active session whose expires_at has passed as expired."""
    expired: list[str] = []
    failed: list[str] = []
    for user_id in store.user_ids():
        try:
            session = store.get(user_id)
            if session.status == "active" and datetime.fromisoformat(session.expires_at) <= now:
                store.put(ended(session, "expired", now))
                expired.append(user_id)
        except (SessionStoreError, ValueError) as error:
            logger.error("could not expire a session", extra={"kite_user_id": user_id, "reason": str(error)})
            failed.append(user_id)
    logger.info("sessions expired", extra={"expired": len(expired), "failed": len(failed)})
    return Result(not failed, {"expired": expired, "failed": failed})


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
            return Result(False, {"error": f"Kite did not log the session out: {error}"})
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
        return Result(False, {"error": f"Kite did not renew the session: {error}"})
    fresh = renewed(
        session,
        access_token=str(data["access_token"]),
        public_token=str(data.get("public_token") or ""),
        refresh_token=str(data.get("refresh_token") or ""),
        now=now,
    )
    store.put(fresh)
    return Result(True, {"user_id": user_id, "status": "active", "expires_at": fresh.expires_at})
