"""Playwright on Debian's Chromium: the launch settings and a page that records what it did."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Page

from helpers.server import Server

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Headless, no sandbox (we run as root in CI), and nothing that talks to the network by itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-pings",
    "--disable-dev-shm-usage",
]
DESKTOP = {"width": 1280, "height": 900}


@dataclass
class Watch:
    """What a page did that a test should know about."""

    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught script errors
    console: list[str] = field(default_factory=list)  # console errors (a 4xx answer logs one too)

    def outside(self) -> list[str]:
        own = (self.origin + "/", "data:")
        return [url for url in self.requests if not url.startswith(own)]


def open_page(browser: Browser, server: Server, viewport: dict[str, int] = DESKTOP) -> tuple[Page, Watch]:
    context = browser.new_context(viewport=viewport, base_url=server.url)  # type: ignore[arg-type]
    page = context.new_page()
    watch = Watch(server.url)
    page.on("request", lambda request: watch.requests.append(request.url))
    page.on("pageerror", lambda error: watch.errors.append(str(error)))
    page.on("console", lambda msg: watch.console.append(msg.text) if msg.type == "error" else None)
    page.goto("/playground")
    page.wait_for_selector("html[data-ready=true]")
    return page, watch
