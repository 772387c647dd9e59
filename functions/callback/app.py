"""GET /callback: Kite's login redirect. Check the state, exchange the request_token, store the session."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from kitehooks.clock import utc_now
from kitehooks.config import callback_settings
from kitehooks.credentials import api_credentials
from kitehooks.deadline import Deadline, DeadlineExceeded
from kitehooks.login.callback import BrowserCookies, complete_login
from kitehooks.login.pages import base_path, is_https, register_error_pages, render, request_cookie
from kitehooks.login.start import Page, completed_cookie_name, state_cookie_name

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
            cookies = BrowserCookies(
                login=request_cookie(event, state_cookie_name(secure)),
                completed=request_cookie(event, completed_cookie_name(secure)),
            )
            page = complete_login(
                settings, credentials, query, cookies, secure, utc_now(), deadline, base_path(event)
            )
    except DeadlineExceeded:
        logger.error("login timed out before it could be completed")
        # The login cookie stays: it may hold other tabs' logins, and this state is used or expires.
        page = Page(
            503,
            "Login is taking too long",
            "kitehooks could not complete the login in time. Please start again from /login.",
        )
    return render(page, base_path(event))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The resolver's per-request context (cleared after each request) carries the deadline.
    app.context["deadline"] = Deadline.from_context(
        context, ANSWER_MARGIN_SECONDS, cap_seconds=API_GATEWAY_SECONDS
    )
    return app.resolve(event, context)
