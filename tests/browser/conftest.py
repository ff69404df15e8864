"""Fixtures of the browser tests: Debian's chromium driven by Playwright for Python.

- ``browser`` (module): chromium launched headless with ``CHROMIUM_ARGS``; Playwright gives
  every launch a fresh, temporary user data dir. Missing chromium or Playwright skips, or with
  ``FEEDS_REQUIRE_BROWSER=1`` (CI) fails. Module-scoped, not session-scoped: Playwright's sync
  API holds an event loop running in the main thread while it is open, and every asyncio test
  run meanwhile would fail ("cannot be called from a running event loop").
- ``open_page(url)`` (function): a page in a context of its own (its own sessionStorage),
  1200×720. A page that throws an uncaught error fails the test at teardown.
- ``bare_page`` (session): ``tests.support.browser.BarePage``.
- ``screenshot(page, name)``: a PNG in the test's tmp dir, and in ``FEEDS_SCREENSHOT_DIR``
  when set (to look at them, or to refresh docs/demo.png).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, BarePage, require_or_skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_or_skip("playwright is not installed (pip install -e '.[dev]')")
    if not os.access(CHROMIUM, os.X_OK):
        require_or_skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[str], Any]]:
    contexts: list[Any] = []
    errors: list[str] = []

    def open_page(url: str) -> Any:
        context = browser.new_context(viewport={"width": 1200, "height": 720})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
        page.goto(url)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == [], errors


@pytest.fixture(scope="session")
def bare_page() -> Iterator[BarePage]:
    with BarePage() as page:
        yield page


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Any, str], Path]:
    def take(page: Any, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path))
        if folder := os.environ.get("FEEDS_SCREENSHOT_DIR"):
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(folder) / path.name)
        return path

    return take
