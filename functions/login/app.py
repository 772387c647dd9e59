"""GET /login: send the browser to Kite's login page with a signed, browser-bound state."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from kitehooks.config import login_settings
from kitehooks.credentials import api_credentials
from kitehooks.login import begin_login
from kitehooks.pages import is_https, register_error_pages, render

logger = Logger()
app = APIGatewayHttpResolver()
register_error_pages(app, logger, action="started")


@app.get("/login")
def login() -> Response[str]:
    settings = login_settings()
    credentials = api_credentials()
    next_path = app.current_event.get_query_string_value("next")
    return render(begin_login(settings, credentials, next_path, is_https(app.current_event), time.time()))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
