"""The playground in a real browser: Debian's Chromium driven by Playwright, against the real server.

One browser for the whole folder (package scope), one fresh context (tab, storage) per test.
Each page records every request it makes and every script error: a request to anywhere but
the server under test, or an uncaught error, fails the test that caused it.
Screenshots go to ``test-output/playground`` (``TEST_OUTPUT_DIR`` moves it), git-ignored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.browser import CHROMIUM, CHROMIUM_ARGS, Watch, open_page
from helpers.server import ROOT, Server
from playwright.sync_api import Browser, Page, Playwright, sync_playwright


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def shots() -> Path:
    """Where screenshots go; the folder is emptied once per run."""
    out = Path(os.environ.get("TEST_OUTPUT_DIR", ROOT / "test-output")) / "playground"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    return out


@pytest.fixture(scope="module")
def api(default_server: Server) -> Iterator[httpx.Client]:
    """The same server's API, to compare the page's numbers with."""
    with httpx.Client(base_url=default_server.url, timeout=60) as client:
        yield client


@pytest.fixture
def page_watch(browser: Browser, default_server: Server) -> Iterator[tuple[Page, Watch]]:
    page, watch = open_page(browser, default_server)
    yield page, watch
    page.context.close()
    assert not watch.outside(), f"the page fetched from outside the server: {watch.outside()}"
    assert not watch.errors, f"uncaught script errors: {watch.errors}"


@pytest.fixture
def page(page_watch: tuple[Page, Watch]) -> Page:
    return page_watch[0]
