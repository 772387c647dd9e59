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
from kitehooks.deadline import Deadline, DeadlineExceeded
from kitehooks.login import Page, state_cookie, state_cookie_name
from kitehooks.pages import is_https, register_error_pages, render, request_cookie

logger = Logger()
app = APIGatewayHttpResolver()
register_error_pages(app, logger, action="completed")

# API Gateway gives up 30 s after the request arrived, whatever the function's Timeout; our own
# page leaves this much before the sooner of the two.
API_GATEWAY_SECONDS = 29.0
ANSWER_MARGIN_SECONDS = 2.0
SECRETS_READ_SECONDS = 7.0


@app.get("/callback")
def callback() -> Response[str]:
    deadline: Deadline = app.context["deadline"]
    event = app.current_event
    secure = is_https(event)
    try:
        with deadline.limit():
            settings = callback_settings()
            with deadline.limit(SECRETS_READ_SECONDS):
                credentials = api_credentials()
            query = {
                key: value
                for key, value in (event.query_string_parameters or {}).items()
                if isinstance(value, str)
            }
            cookie_nonce = request_cookie(event, state_cookie_name(secure))
            page = complete_login(settings, credentials, query, cookie_nonce, secure, utc_now(), deadline)
    except DeadlineExceeded:
        logger.error("login timed out before it could be completed")
        page = Page(
            503,
            "Login is taking too long",
            "kitehooks could not complete the login in time. Please start again from /login.",
            cookies=[state_cookie("", 0, secure)],
        )
    return render(page)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The resolver's per-request context (cleared after each request) carries the deadline.
    app.context["deadline"] = Deadline.from_context(
        context, ANSWER_MARGIN_SECONDS, cap_seconds=API_GATEWAY_SECONDS
    )
    return app.resolve(event, context)
