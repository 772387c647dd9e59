"""Sessions without a public route: expire them at 06:00 IST (schedule), log out or renew (invoke).

Invoke with ``{"action": "logout", "user_id": "AB1234"}`` or ``{"action": "renew", "user_id": ...}``;
the daily schedule at 06:00 IST sends ``{"action": "expire"}``.

A request that cannot be done (unknown action, bad user_id, no such session) is answered
``{"ok": false, "detail": {"error": ...}}``: the caller's mistake, which no retry or alarm can fix.
When kitehooks cannot do its part (configuration, Secrets Manager, Kite failing, or any session
left unexpired) the invocation fails with ``SessionActionFailed``: Lambda counts an error, retries
the scheduled run, and the errors alarm fires.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from kitehooks import aws, kite, session_admin
from kitehooks.clock import utc_now
from kitehooks.config import ConfigurationError, session_settings
from kitehooks.credentials import CredentialsUnavailable, api_credentials
from kitehooks.deadline import Deadline
from kitehooks.sessions import SessionStore, SessionStoreError, valid_user_id

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()

# Kite calls end this long before Lambda would stop the function, so a Kite that trickles its
# answer fails the run with a clear message rather than a bare timeout.
ANSWER_MARGIN_SECONDS = 5.0


def _refusal(error: str) -> session_admin.Result:
    return session_admin.Result(False, {"error": error})


def run(event: Any, deadline: Deadline) -> session_admin.Result:
    """Check the request, then act. Raises when kitehooks cannot do its part."""
    if not isinstance(event, dict):
        return _refusal('the event must be a JSON object such as {"action": "expire"}')
    action = event.get("action")
    if action not in session_admin.ACTIONS:
        return _refusal('action must be "expire", "logout" or "renew"')
    user_id = str(event.get("user_id") or "")
    if action != "expire" and not valid_user_id(user_id):
        return _refusal("user_id must be a Kite user id such as AB1234")

    settings = session_settings()
    store = SessionStore(aws.secretsmanager_client(), settings.session_prefix)
    now = utc_now()
    if action == "expire":
        return session_admin.expire_due(store, now)
    credentials = api_credentials()
    client = kite.KiteClient.from_settings(settings.kite, credentials.api_key, deadline=deadline)
    if action == "logout":
        return session_admin.logout(store, client, user_id, now)
    return session_admin.renew(store, client, credentials, user_id, now)


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
