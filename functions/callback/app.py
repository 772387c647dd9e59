"""GET /callback: Kite's login redirect. Check the state, exchange the request_token, store the session."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from kitehooks.config import ConfigurationError, callback_settings
from kitehooks.credentials import CredentialsUnavailable, credentials_store
from kitehooks.login import complete_login, utc_now
from kitehooks.login_state import STATE_COOKIE
from kitehooks.pages import html_page, is_https, render, request_cookie

logger = Logger()
app = APIGatewayHttpResolver()


@app.get("/callback")
def callback() -> Response[str]:
    settings = callback_settings()
    credentials = credentials_store(settings.credentials_secret_id, settings.credentials_cache_seconds).get()
    event = app.current_event
    query = {
        key: value for key, value in (event.query_string_parameters or {}).items() if isinstance(value, str)
    }
    page = complete_login(
        settings, credentials, query, request_cookie(event, STATE_COOKIE), is_https(event), utc_now()
    )
    return render(page)


@app.exception_handler([ConfigurationError, CredentialsUnavailable])  # type: ignore[untyped-decorator]
def unavailable(error: Exception) -> Response[str]:
    logger.error("login unavailable", extra={"reason": str(error)})
    return html_page(503, "Login is not set up", "kitehooks is not configured yet: see its README.")


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def unexpected(error: Exception) -> Response[str]:
    logger.exception("unexpected error")
    return html_page(500, "Something went wrong", "The login could not be completed. Please try again.")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
