"""Sessions without a public route: expire them at 06:00 IST and check them at Kite (schedules),
log out, renew or report one (invoke).

Invoke with ``{"action": "logout" | "renew" | "status", "user_id": "AB1234"}`` or
``{"action": "check"}`` (every active session; with ``user_id``, that one); the daily schedule at
06:00 IST sends ``{"action": "expire"}``, the market-hours schedule ``{"action": "check"}``.

A request that cannot be done (unknown action, bad user_id, no such session) is answered
``{"ok": false, "detail": {"error": ...}}``: the caller's mistake, which no retry or alarm can fix.
When kitehooks cannot do its part (configuration, Secrets Manager, Kite failing, any session
left unexpired, or a scheduled run's event not sent) the invocation fails with
``SessionActionFailed``: Lambda counts an error, retries the scheduled run, and the errors alarm
fires.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from kitehooks import aws, clock
from kitehooks.config import ConfigurationError, session_settings
from kitehooks.credentials import CredentialsUnavailable, api_credentials
from kitehooks.deadline import Deadline, DeadlineExceeded
from kitehooks.kite import client as kite
from kitehooks.sessions import admin as session_admin
from kitehooks.sessions.events import SessionEvents
from kitehooks.sessions.store import SessionStore, SessionStoreError, valid_user_id

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()

# Kite calls end this long before Lambda would stop the function, so a Kite that trickles its
# answer fails the run with a clear message rather than a bare timeout.
ANSWER_MARGIN_SECONDS = 5.0
# Kite allows 10 requests/s per api_key, shared with the app's own calls: a check run takes half.
DEFAULT_CHECK_REQUESTS_PER_SECOND = 5.0


def _refusal(error: str) -> session_admin.Result:
    return session_admin.Result(False, {"error": error})


def check_requests_per_second() -> float:
    raw = os.environ.get("KITE_CHECK_REQUESTS_PER_SECOND", "").strip()
    if not raw:
        return DEFAULT_CHECK_REQUESTS_PER_SECOND
    try:
        rate = float(raw)
    except ValueError:
        raise ConfigurationError("KITE_CHECK_REQUESTS_PER_SECOND must be a number") from None
    if not 0 < rate <= 10:  # Kite's own limit per api_key
        raise ConfigurationError("KITE_CHECK_REQUESTS_PER_SECOND must be above 0 and at most 10")
    return rate


def run(event: Any, deadline: Deadline) -> session_admin.Result:
    """Check the request, then act. Raises when kitehooks cannot do its part."""
    if not isinstance(event, dict):
        return _refusal('the event must be a JSON object such as {"action": "expire"}')
    action = event.get("action")
    if action not in session_admin.ACTIONS:
        return _refusal('action must be "expire", "check", "logout", "renew" or "status"')
    user_id = str(event.get("user_id") or "")
    every_session = action in ("expire", "check") and not user_id
    if action == "expire" and user_id:
        return _refusal("expire takes no user_id: it expires every session past its expires_at")
    if not every_session and not valid_user_id(user_id):
        return _refusal("user_id must be a Kite user id such as AB1234")

    settings = session_settings()
    store = SessionStore(aws.secretsmanager_client(), settings.session_prefix)
    now = clock.utc_now()
    if action == "status":
        return session_admin.status(store, user_id, now)
    # Made lazily: status reads one secret and needs no EventBridge model loaded.
    events = SessionEvents(aws.events_client(), deadline)
    if action == "expire":
        return session_admin.expire_due(store, events, deadline, now)
    try:
        with deadline.limit():
            credentials = api_credentials()
    except DeadlineExceeded:
        raise CredentialsUnavailable("could not read the credentials secret in time") from None
    client = kite.KiteClient.from_settings(settings.kite, credentials.api_key, deadline=deadline)
    if action == "check":
        pacer = session_admin.Pacer(check_requests_per_second())
        return session_admin.check(store, client, events, deadline, pacer, now, user_id or None)
    if action == "logout":
        return session_admin.logout(store, client, events, user_id, now)
    return session_admin.renew(store, client, events, credentials, user_id, now)


@logger.inject_lambda_context(clear_state=True)
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    try:
        result = run(event, Deadline.from_context(context, ANSWER_MARGIN_SECONDS))
    except (
        ConfigurationError,
        CredentialsUnavailable,
        SessionStoreError,
        session_admin.SessionActionFailed,
    ) as error:
        # Every one of these messages is written to name no token.
        action = event.get("action") if isinstance(event, dict) else None
        logger.error("session action failed", extra={"action": action, "reason": str(error)})
        raise session_admin.SessionActionFailed(f"{action} failed: {error}") from None
    if not result.ok:
        logger.warning("session action refused", extra={"reason": result.detail.get("error", "")})
    return asdict(result)
