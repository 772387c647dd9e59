"""Sessions without a public route: expire them at 06:00 IST (schedule), log out or renew (invoke).

Invoke with ``{"action": "logout", "user_id": "AB1234"}`` or ``{"action": "renew", "user_id": ...}``;
the daily schedule at 06:00 IST sends ``{"action": "expire"}``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from kitehooks import aws, kite, session_admin
from kitehooks.clock import utc_now
from kitehooks.config import ConfigurationError, session_settings
from kitehooks.credentials import CredentialsUnavailable, api_credentials
from kitehooks.sessions import SessionStore, SessionStoreError, valid_user_id

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()


def run(event: dict[str, Any]) -> session_admin.Result:
    settings = session_settings()
    store = SessionStore(aws.secretsmanager_client(), settings.session_prefix)
    now = utc_now()
    if event.get("action") == "expire":
        return session_admin.expire_due(store, now)

    action, user_id = event.get("action"), str(event.get("user_id") or "")
    if action not in ("logout", "renew"):
        return session_admin.Result(False, {"error": 'action must be "expire", "logout" or "renew"'})
    if not valid_user_id(user_id):
        return session_admin.Result(False, {"error": "user_id must be a Kite user id such as AB1234"})
    credentials = api_credentials()
    client = kite.KiteClient.from_settings(settings.kite, credentials.api_key)
    if action == "logout":
        return session_admin.logout(store, client, user_id, now)
    return session_admin.renew(store, client, credentials, user_id, now)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        result = run(event)
    except (ConfigurationError, CredentialsUnavailable, SessionStoreError) as error:
        logger.error("session action failed", extra={"reason": str(error)})
        result = session_admin.Result(False, {"error": str(error)})
    return asdict(result)
