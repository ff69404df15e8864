"""The instances page (``GET /admin``) in headless Chromium: two instances on Redis, behind
an api key, each listed with its figures, and the figures follow the instances (every 2 s)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

KEY = "sesame"


def listed(page: Any) -> dict[str, int]:
    """The panel's rows: instance id -> connections."""
    found: list[list[Any]] = page.eval_on_selector_all(
        "#instances tbody tr",
        "rows => rows.map(r => [r.dataset.instance, +r.cells[5].textContent])",
    )
    return {instance: connections for instance, connections in found}


def test_the_panel_lists_every_instance_behind_the_api_key(
    feeds_server_factory: Any,
    redis_url: str,
    open_page: Callable[[str], Any],
    screenshot: Callable[[Any, str], Path],
) -> None:
    one = feeds_server_factory(broker=redis_url, args=["--api-key", KEY])
    two = feeds_server_factory(broker=redis_url, args=["--api-key", KEY])
    panel = open_page(f"{one.url}/admin")
    # Without the key the page says so instead of showing figures.
    panel.wait_for_function("document.querySelector('#status').className === 'bad'")
    assert listed(panel) == {}

    panel.fill("#api-key", KEY)
    panel.press("#api-key", "Enter")
    panel.wait_for_function(
        "document.querySelectorAll('#instances tbody tr').length === 2", timeout=10_000
    )
    assert set(listed(panel).values()) == {0}

    # A client of instance two shows in the panel served by instance one, within a refresh
    # or two (figures come from the heartbeats through Redis).
    demo = open_page(f"{two.url}/#lobby")
    demo.wait_for_selector("#state[data-state='connected']")
    panel.wait_for_function(
        "[...document.querySelectorAll('#instances tbody tr')]"
        ".some(r => r.cells[5].textContent === '1')",
        timeout=10_000,
    )
    assert sorted(listed(panel).values()) == [0, 1]
    assert panel.text_content("#count") == "2 instances"
    screenshot(panel, "admin")
