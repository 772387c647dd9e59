"""The small HTML pages a person sees at /login and /callback."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from typing import TYPE_CHECKING

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.shared.cookies import Cookie

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

    from kitehooks.login.start import Page

# A small, self-contained style: system fonts, readable contrast in light and dark, visible
# focus. Allowed by its hash, so the policy still loads nothing from anywhere.
_STYLE = (
    ":root{color-scheme:light dark;--fg:#1f2328;--bg:#f6f8fa;--card:#fff;--muted:#57606a;"
    "--line:#d0d7de;--link:#0550ae;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e}"
    "@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--card:#161b22;"
    "--muted:#9198a1;--line:#30363d;--link:#4493f8;--ok:#3fb950;--warn:#d29922;--bad:#f85149}}"
    "*{box-sizing:border-box}"
    "body{margin:0;padding:4rem 1rem;background:var(--bg);color:var(--fg);"
    "font:1.0625rem/1.6 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}"
    "main{max-width:36rem;margin:0 auto;padding:1.75rem 2rem;background:var(--card);"
    "border:1px solid var(--line);border-top:.375rem solid var(--accent);border-radius:.5rem}"
    ".ok{--accent:var(--ok)}.warn{--accent:var(--warn)}.bad{--accent:var(--bad)}.plain{--accent:var(--line)}"
    ".brand{margin:0;color:var(--muted);font-size:.875rem;letter-spacing:.04em}"
    "h1{margin:.25rem 0 1rem;font-size:1.5rem;line-height:1.3}p{margin:0 0 1rem}"
    ".next{color:var(--muted)}a{color:var(--link);text-underline-offset:.15em}"
    "a:focus-visible{outline:.2rem solid var(--link);outline-offset:.15rem;border-radius:.2rem}"
    ".button{display:inline-block;padding:.5rem 1rem;border:1px solid var(--link);"
    "border-radius:.375rem;font-weight:600;text-decoration:none}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode("utf-8")).digest()).decode("ascii")

# The callback URL carries a request_token: no referrer leaves the page, nothing is cached, and
# the page loads nothing from anywhere.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - kitehooks</title>
<style>{style}</style></head>
<body><main class="{kind}"><p class="brand">kitehooks</p>
<h1>{title}</h1>
<p>{message}</p>{extra}
</main></body></html>
"""

# Where a page's text names /login, it links there.
_LOGIN_MENTION = re.compile(r"(?<![\w/])/login\b")


def base_path(event: APIGatewayProxyEventV2) -> str:
    """The prefix before the API's own paths: ``/prod`` when the stage is in the URL (the
    execute-api URL), "" on the local stack, a ``$default`` stage or a custom domain's mapping."""
    stage = event.request_context.stage
    raw_path = event.raw_path or ""
    if stage and stage != "$default":
        prefix = f"/{stage}"
        if raw_path == prefix or raw_path.startswith(f"{prefix}/"):
            return prefix
    return ""


def _kind(status_code: int, plain: bool) -> str:
    if plain:
        return "plain"
    return "ok" if status_code < 400 else "warn" if status_code < 500 else "bad"


def _sentence(message: str) -> str:
    """Reasons are written lower-case for logs too; on a page each reads as a sentence."""
    text = message[:1].upper() + message[1:]
    return text if text.endswith((".", "!", "?")) else f"{text}."


def html_page(
    status_code: int,
    title: str,
    message: str,
    cookies: list[Cookie] | None = None,
    *,
    base: str = "",
    next_step: str | None = None,
    link: tuple[str, str] | None = None,
    plain: bool = False,
) -> Response[str]:
    login_link = f'<a href="{html.escape(base)}/login">/login</a>'
    text = _LOGIN_MENTION.sub(login_link, html.escape(_sentence(message), quote=False))
    extra = ""
    if next_step:
        extra += f'\n<p class="next">{html.escape(next_step)}</p>'
    if link:
        label, path = link
        extra += f'\n<p><a class="button" href="{html.escape(base + path)}">{html.escape(label)}</a></p>'
    body = _PAGE.format(
        title=html.escape(title), message=text, extra=extra, kind=_kind(status_code, plain), style=_STYLE
    )
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


def render(page: Page, base: str = "") -> Response[str]:
    """The page as an HTTP answer; ``base`` (see base_path) prefixes the API's own paths."""
    if page.location is not None:
        return redirect(page.location, page.cookies, page.status_code)
    return html_page(
        page.status_code,
        page.title,
        page.message,
        page.cookies,
        base=base,
        next_step=page.next_step,
        link=page.link,
        plain=page.plain,
    )


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

    def base() -> str:
        try:
            return base_path(app.current_event)
        except Exception:  # an event too broken to read: links then start at the host's root
            return ""

    def unavailable(error: Exception) -> Response[str]:
        logger.error("login unavailable", extra={"reason": str(error)})
        if isinstance(error, CredentialsUnreachable):
            return html_page(
                503, "Login is unavailable", "Please try again in a minute from /login.", base=base()
            )
        return html_page(503, "Login is not set up", "kitehooks is not configured yet: see its README.")

    def unexpected(error: Exception) -> Response[str]:
        logger.exception("unexpected error")
        return html_page(
            500,
            "Something went wrong",
            f"The login could not be {action}. Please try again from /login.",
            base=base(),
        )

    def not_served(error: Exception) -> Response[str]:
        # The catch-all below would otherwise turn the resolver's "no such route" into a 500.
        return html_page(404, "Not found", "Nothing is served here: start from /login.", base=base())

    app.exception_handler([ConfigurationError, CredentialsUnavailable])(unavailable)
    app.exception_handler(NotFoundError)(not_served)
    app.exception_handler(Exception)(unexpected)
