"""GET /login: send the browser to Kite's login page with a signed, browser-bound state."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from kitehooks.config import ConfigurationError, login_settings
from kitehooks.credentials import CredentialsUnavailable, credentials_store
from kitehooks.login import begin_login
from kitehooks.pages import html_page, is_https, render

logger = Logger()
app = APIGatewayHttpResolver()


@app.get("/login")
def login() -> Response[str]:
    settings = login_settings()
    credentials = credentials_store(settings.credentials_secret_id, settings.credentials_cache_seconds).get()
    next_path = app.current_event.get_query_string_value("next")
    return render(begin_login(settings, credentials, next_path, is_https(app.current_event), time.time()))


@app.exception_handler([ConfigurationError, CredentialsUnavailable])  # type: ignore[untyped-decorator]
def unavailable(error: Exception) -> Response[str]:
    logger.error("login unavailable", extra={"reason": str(error)})
    return html_page(503, "Login is not set up", "kitehooks is not configured yet: see its README.")


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def unexpected(error: Exception) -> Response[str]:
    logger.exception("unexpected error")
    return html_page(500, "Something went wrong", "The login could not be started. Please try again.")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
