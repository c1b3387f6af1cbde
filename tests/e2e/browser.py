"""A real browser for the dashboard tests: Debian's Chromium driven by Playwright, headless, that may reach
loopback only. Every other request is aborted and recorded, and so is every console error (a CSP violation
is one), for the tests to assert that none happened.

Without /usr/bin/chromium the tests skip, or fail when CI=true (.ci/run installs it with apt-get).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.service_guard import in_ci

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if in_ci():
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


def is_loopback(url: str) -> bool:
    scheme, host = urlsplit(url).scheme, urlsplit(url).hostname or ""
    if scheme in ("data", "blob", "about"):
        return True
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Watch:
    """What a browser context did that a test must see as empty."""

    outside: list[str] = field(default_factory=list)  # requests to anything but loopback (aborted)
    console_errors: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.outside, f"requests left the machine: {self.outside}"
        assert not self.console_errors, f"console errors: {self.console_errors}"


@contextmanager
def chromium() -> Iterator[object]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_context(browser: object, watch: Watch) -> object:
    """A context (one user's cookie jar) whose every request and console error is watched."""
    from playwright.sync_api import Browser, ConsoleMessage, Page, Route

    assert isinstance(browser, Browser)
    context = browser.new_context(viewport={"width": 1360, "height": 860}, accept_downloads=True)

    def guard(route: Route) -> None:
        if is_loopback(route.request.url):
            route.continue_()
        else:
            watch.outside.append(route.request.url)
            route.abort()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and "status of 4" not in message.text:  # 4xx answers the tests ask for
            watch.console_errors.append(f"{message.location.get('url')}: {message.text}")

    context.route("**/*", guard)
    context.on("page", lambda page: (page.on("console", console),
                                     page.on("pageerror", lambda e: watch.console_errors.append(str(e)))))
    del Page
    return context


def screenshot_dir(default: Path) -> Path:
    """Where the tests save their screenshots: DASHBOARD_SCREENSHOTS (`make screenshots` sets docs/img)."""
    target = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or default)
    target.mkdir(parents=True, exist_ok=True)
    return target
