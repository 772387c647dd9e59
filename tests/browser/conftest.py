"""A real browser (Debian's headless Chromium, driven by selenium) against the local stack.

Collected only when named (``pytest tests/browser``, as ``make browser-test`` runs it), so plain
``pytest`` and ``make test`` never start a browser; skipped with one line when Chromium, its
driver or selenium is missing. Screenshots of every page go to ``test-output/browser/``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from local.dev import DevPorts, DevStack

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUTPUT = ROOT / "test-output" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Headless, and nothing that reaches out to the network on its own (updates, sync, QUIC probes).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1000,760",
)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Ignore these tests unless a path in or under this folder was named on the command line."""
    for argument in config.args:
        named = (Path(config.invocation_params.dir) / argument.split("::")[0]).resolve()
        if named == HERE or HERE in named.parents:
            return None
    return True


def missing_browser() -> str | None:
    """Why no browser test can run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (Debian package {package}): `make browser-test` installs it as root"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: `make venv` installs requirements-dev.txt"
    return None


@pytest.fixture(scope="session", autouse=True)
def _browser_available() -> None:
    reason = missing_browser()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def stack() -> Iterator[DevStack]:
    with DevStack(ports=DevPorts(api=0, aws=0, kite=0)) as running:
        yield running


@pytest.fixture
def new_browser() -> Iterator[Callable[[], WebDriver]]:
    """Starts headless Chromium, each with its own new profile (no cookies); all quit after the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    started: list[tuple[WebDriver, str]] = []

    def start() -> WebDriver:
        profile = tempfile.mkdtemp(prefix="kitehooks-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        driver.set_page_load_timeout(30)
        started.append((driver, profile))
        return driver

    yield start
    for driver, profile in started:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def screenshot() -> Callable[[WebDriver, str], Path]:
    """Saves the browser's page as test-output/browser/<name>.png (the folder ignores itself in git)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT.parent / ".gitignore").write_text("*\n")

    def save(driver: WebDriver, name: str) -> Path:
        path = OUTPUT / f"{name}.png"
        assert driver.save_screenshot(str(path)), f"no screenshot of {name}"
        return path

    return save
