"""The small HTML pages a person sees at /login and /callback."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.shared.cookies import Cookie

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

    from kitehooks.login import Page

# The callback URL carries a request_token: no referrer leaves the page, nothing is cached, and
# the page loads nothing from anywhere.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;color:#222}}
h1{{font-size:1.4rem}}</style></head>
<body><h1>{title}</h1><p>{message}</p></body></html>
"""


def html_page(
    status_code: int, title: str, message: str, cookies: list[Cookie] | None = None
) -> Response[str]:
    body = _PAGE.format(title=html.escape(title), message=html.escape(message))
    return Response(
        status_code=status_code,
        content_type="text/html; charset=utf-8",
        body=body,
        headers=dict(SECURITY_HEADERS),
        cookies=cookies or [],
    )


def redirect(location: str, cookies: list[Cookie] | None = None, status_code: int = 302) -> Response[str]:
    return Response(
        status_code=status_code,
        content_type="text/plain; charset=utf-8",
        body="",
        headers={**SECURITY_HEADERS, "Location": location},
        cookies=cookies or [],
    )


def render(page: Page) -> Response[str]:
    if page.location is not None:
        return redirect(page.location, page.cookies, page.status_code)
    return html_page(page.status_code, page.title, page.message, page.cookies)


def request_cookie(event: APIGatewayProxyEventV2, name: str) -> str | None:
    """The first cookie called ``name`` that the browser sent."""
    for cookie in event.cookies or []:
        key, _, value = cookie.partition("=")
        if key.strip() == name:
            return value.strip()
    return None


def is_https(event: APIGatewayProxyEventV2) -> bool:
    """API Gateway is HTTPS only; a local gateway on plain HTTP says so in X-Forwarded-Proto."""
    return (event.headers or {}).get("x-forwarded-proto", "https").lower() != "http"


def register_error_pages(app: APIGatewayHttpResolver, logger: Logger, action: str) -> None:
    """Plain pages, never a stack trace: 503 while unconfigured, 500 for anything unexpected."""
    from aws_lambda_powertools.event_handler.exceptions import NotFoundError

    from kitehooks.config import ConfigurationError
    from kitehooks.credentials import CredentialsUnavailable, CredentialsUnreachable

    def unavailable(error: Exception) -> Response[str]:
        logger.error("login unavailable", extra={"reason": str(error)})
        if isinstance(error, CredentialsUnreachable):
            return html_page(503, "Login is unavailable", "Please try again in a minute.")
        return html_page(503, "Login is not set up", "kitehooks is not configured yet: see its README.")

    def unexpected(error: Exception) -> Response[str]:
        logger.exception("unexpected error")
        return html_page(500, "Something went wrong", f"The login could not be {action}. Please try again.")

    def not_served(error: Exception) -> Response[str]:
        # The catch-all below would otherwise turn the resolver's "no such route" into a 500.
        return html_page(404, "Not found", "Nothing is served here: start from /login.")

    app.exception_handler([ConfigurationError, CredentialsUnavailable])(unavailable)
    app.exception_handler(NotFoundError)(not_served)
    app.exception_handler(Exception)(unexpected)
