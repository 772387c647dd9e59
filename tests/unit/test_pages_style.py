"""The login pages' HTML: self-contained, accessible, linking where the text says /login."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from kitehooks.login.pages import SECURITY_HEADERS, html_page, render
from kitehooks.login.start import Page


def style_of(body: str) -> str:
    found = re.search(r"<style>(.*?)</style>", body, flags=re.DOTALL)
    assert found is not None
    return found.group(1)


def test_the_one_inline_style_is_allowed_by_its_hash_and_nothing_else_loads() -> None:
    body = html_page(200, "Title", "Message.").body
    assert body is not None
    digest = base64.b64encode(hashlib.sha256(style_of(body).encode()).digest()).decode()
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    assert policy.startswith("default-src 'none';")
    assert f"style-src 'sha256-{digest}'" in policy
    assert "unsafe-inline" not in policy
    # No external asset: no URL, no @import, no script, no image.
    assert not re.search(r"https?:|@import|url\(|<script|<img|<link", body)


def test_a_page_has_a_language_a_viewport_a_title_and_one_heading() -> None:
    body = html_page(400, "Login could not be completed", "Start again.").body
    assert body is not None
    assert '<html lang="en">' in body
    assert 'name="viewport"' in body
    assert "<title>Login could not be completed - kitehooks</title>" in body
    assert body.count("<h1>") == 1
    assert "<main" in body


@pytest.mark.parametrize(
    ("base", "href"),
    [("", "/login"), ("/prod", "/prod/login")],
)
def test_the_text_links_where_it_says_login(base: str, href: str) -> None:
    body = html_page(400, "T", "the login state is missing: start again from /login", base=base).body
    assert body is not None
    assert f'The login state is missing: start again from <a href="{href}">/login</a>.' in body


def test_a_url_that_ends_in_login_is_not_a_link_and_markup_is_escaped() -> None:
    body = html_page(400, "<b>T</b>", "see http://127.0.0.1:3000/login or /loginx <i>x</i>").body
    assert body is not None
    assert "<a " not in body
    assert "&lt;b&gt;T&lt;/b&gt;" in body
    assert "&lt;i&gt;x&lt;/i&gt;" in body


def test_the_next_step_and_link_are_shown_and_the_tone_follows_the_status() -> None:
    ok = render(Page(200, "Welcome", "Logged in.", next_step="You can close this tab."))
    assert ok.body is not None
    assert '<main class="ok">' in ok.body
    assert '<p class="next">You can close this tab.</p>' in ok.body
    refused = render(Page(400, "No", "Refused.", link=("Start again", "/login")), "/prod")
    assert refused.body is not None
    assert '<main class="warn">' in refused.body
    assert '<a class="button" href="/prod/login">Start again</a>' in refused.body
    failed = render(Page(503, "Down", "Try later."))
    assert failed.body is not None
    assert '<main class="bad">' in failed.body
    plain = render(Page(200, "Landing", "What this is.", plain=True))
    assert plain.body is not None
    assert '<main class="plain">' in plain.body
