"""GET /callback: Kite's login redirect. Check the state, exchange the request_token, store the session."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from kitehooks.callback import complete_login
from kitehooks.clock import utc_now
from kitehooks.config import callback_settings
from kitehooks.credentials import api_credentials
from kitehooks.login_state import STATE_COOKIE
from kitehooks.pages import is_https, register_error_pages, render, request_cookie

logger = Logger()
app = APIGatewayHttpResolver()
register_error_pages(app, logger, action="completed")


@app.get("/callback")
def callback() -> Response[str]:
    settings = callback_settings()
    credentials = api_credentials()
    event = app.current_event
    query = {
        key: value for key, value in (event.query_string_parameters or {}).items() if isinstance(value, str)
    }
    page = complete_login(
        settings, credentials, query, request_cookie(event, STATE_COOKIE), is_https(event), utc_now()
    )
    return render(page)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
