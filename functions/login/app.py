"""GET /login: send the browser to Kite's login page with a signed, browser-bound state.
GET /: the landing page (what this is, a link to /login)."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from kitehooks.config import login_settings
from kitehooks.credentials import api_credentials
from kitehooks.login.pages import base_path, is_https, register_error_pages, render, request_cookie
from kitehooks.login.start import (
    begin_login,
    landing_page,
    on_registered_host,
    state_cookie_name,
)

logger = Logger()
app = APIGatewayHttpResolver()
register_error_pages(app, logger, action="started")


@app.get("/")
def landing() -> Response[str]:
    return render(landing_page(), base_path(app.current_event))


@app.get("/login")
def login() -> Response[str]:
    event = app.current_event
    secure = is_https(event)
    settings = login_settings()
    # Before anything else: the cookie must be set on the host Kite will send the browser back to.
    elsewhere = on_registered_host(
        settings.redirect_url,
        (event.headers or {}).get("host"),
        secure,
        event.raw_path,
        event.get("rawQueryString") or "",
    )
    if elsewhere is not None:
        return render(elsewhere)
    credentials = api_credentials()
    next_path = event.get_query_string_value("next")
    login_cookie = request_cookie(event, state_cookie_name(secure))
    page = begin_login(settings, credentials, next_path, secure, time.time(), login_cookie)
    return render(page, base_path(event))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The API's URL as output (https://<api>.../prod, no slash) reaches GET / with rawPath
    # "/prod"; the resolver, stripping the stage, would find no route for "".
    stage = (event.get("requestContext") or {}).get("stage")
    if stage and stage != "$default" and event.get("rawPath") == f"/{stage}":
        event = {**event, "rawPath": f"/{stage}/"}
    return app.resolve(event, context)
