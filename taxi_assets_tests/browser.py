"""The Dagster UI in a real browser: Debian's chromium, driven by playwright."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = Path(os.environ.get("TAXI_CHROMIUM", "/usr/bin/chromium"))
# No network but loopback here, and nothing to download: no GPU, QUIC, sync or updates.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def ui_page() -> Iterator[Page]:
    """A fresh page; skips the test when chromium is not installed."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"no {CHROMIUM}: `make test` installs Debian's chromium when run as root "
            "(scripts/ensure-chromium.sh)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1200})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)
            # The UI greets a new browser with a newsletter dialog over the page: say it was
            # dismissed before (the UI's own localStorage flag), and skip it should it show.
            page.add_init_script("window.localStorage.setItem('communityNux', 'true')")
            page.add_locator_handler(
                page.get_by_role("button", name="Skip"), lambda skip: skip.click()
            )
            yield page
        finally:
            browser.close()
