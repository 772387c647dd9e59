"""The login pages in headless Chromium against `make dev`'s stack: what a person sees and does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from local.dev import DevStack

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

Browser = Callable[[], "WebDriver"]
Screenshot = Callable[["WebDriver", str], Path]


def exchanges(stack: DevStack) -> int:
    """request_token exchanges the Kite simulator has answered: each login spends exactly one."""
    return sum(1 for r in stack.simulator.api_requests() if (r.method, r.path) == ("POST", "/session/token"))


def page_text(driver: WebDriver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "main").text


def wait_for_heading(driver: WebDriver, words: str) -> str:
    """The page's text once its heading contains ``words`` (navigations end after redirects)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(lambda d: words in d.find_element(By.TAG_NAME, "h1").text)
    return page_text(driver)


def start_login_while_kite_waits(driver: WebDriver, url: str) -> str:
    """Opens ``url`` (/login) and returns the Kite login URL the tab was sent to and could not
    reach: the tab then waits at Kite's login page, as while a user types a password there."""
    from selenium.common.exceptions import WebDriverException

    with pytest.raises(WebDriverException, match="ERR_CONNECTION_REFUSED"):
        driver.get(url)
    return kite_login_url(driver)


def kite_login_url(driver: WebDriver) -> str:
    """The URL this tab last tried to open: Kite's login page."""
    history = driver.execute_cdp_cmd("Page.getNavigationHistory", {})
    url = str(history["entries"][history["currentIndex"]]["url"])
    assert url.startswith(f"{url.split('/connect/')[0]}/connect/login?"), url
    return url


def test_landing_page_login_and_reload_on_127_0_0_1(
    stack: DevStack, new_browser: Browser, screenshot: Screenshot
) -> None:
    from selenium.webdriver.common.by import By

    driver = new_browser()
    before = exchanges(stack)
    driver.get(f"{stack.api_url}/")
    assert "kitehooks" in driver.title
    assert "Log in with Kite" in page_text(driver)
    screenshot(driver, "01-landing")

    driver.find_element(By.LINK_TEXT, "Log in with Kite").click()
    greeting = wait_for_heading(driver, "Welcome, Arjun Bhat")
    assert "You are logged in to Kite as AB1234" in greeting
    assert "You can close this tab." in greeting
    screenshot(driver, "02-greeting")

    driver.refresh()
    reloaded = wait_for_heading(driver, "You are logged in")
    assert "already completed" in reloaded
    assert "could not" not in reloaded
    screenshot(driver, "03-greeting-reloaded")

    driver.back()  # to the landing page, then Forward to the greeting again
    wait_for_heading(driver, "Connect your Kite account")
    driver.forward()
    assert "already completed" in wait_for_heading(driver, "You are logged in")
    assert exchanges(stack) == before + 1  # the reloads never spent a request_token


def test_a_login_started_on_localhost_completes(
    stack: DevStack, new_browser: Browser, screenshot: Screenshot
) -> None:
    login = stack.gateway.functions["LoginFunction"].environment
    if not login.get("REDIRECT_URL"):
        pytest.skip(
            "the local stack does not tell /login the registered redirect URL: local/dev.py must pass "
            "the template parameter KiteRedirectUrl (the simulator's redirect_url)"
        )
    driver = new_browser()
    driver.get(f"http://localhost:{stack.ports.api}/login")
    greeting = wait_for_heading(driver, "Welcome, Arjun Bhat")
    assert "You can close this tab." in greeting
    assert urlsplit(driver.current_url).netloc == f"127.0.0.1:{stack.ports.api}"  # Kite's one redirect URL
    screenshot(driver, "04-greeting-after-localhost")


def test_two_logins_in_two_tabs_both_complete(
    stack: DevStack, new_browser: Browser, screenshot: Screenshot
) -> None:
    driver = new_browser()
    before = exchanges(stack)
    # Kite's login page stays open in each tab while the user types; the simulator answers at
    # once, so it is stopped while both tabs start their logins, and each tab then goes on.
    stack.simulator.stop()
    try:
        older_tab = driver.current_window_handle
        older = start_login_while_kite_waits(driver, f"{stack.api_url}/login")
        driver.switch_to.new_window("tab")
        newer_tab = driver.current_window_handle
        newer = start_login_while_kite_waits(driver, f"{stack.api_url}/login")
    finally:
        stack.simulator.start()
    assert older != newer

    # The older tab first: before, the newer /login had replaced its cookie.
    for tab, kite_url, name in ((older_tab, older, "05-older-tab"), (newer_tab, newer, "06-newer-tab")):
        driver.switch_to.window(tab)
        driver.get(kite_url)
        assert "You can close this tab." in wait_for_heading(driver, "Welcome, Arjun Bhat")
        screenshot(driver, name)
    assert exchanges(stack) == before + 2

    for tab in (older_tab, newer_tab):
        driver.switch_to.window(tab)
        driver.refresh()
        assert "already completed" in wait_for_heading(driver, "You are logged in")
    assert exchanges(stack) == before + 2


def test_next_lands_on_the_landing_page_and_a_refusal_links_to_login(
    stack: DevStack, new_browser: Browser, screenshot: Screenshot
) -> None:
    from selenium.webdriver.common.by import By

    driver = new_browser()
    driver.get(f"{stack.api_url}/login?next=/")
    wait_for_heading(driver, "Connect your Kite account")
    assert urlsplit(driver.current_url).path == "/"

    driver.get(f"{stack.api_url}/callback?status=success&request_token=abcdefgh")
    refused = wait_for_heading(driver, "Login could not be completed")
    assert "start again from /login" in refused
    screenshot(driver, "07-refused")
    driver.find_element(By.LINK_TEXT, "/login").click()
    assert "You can close this tab." in wait_for_heading(driver, "Welcome, Arjun Bhat")
