"""The ``node --test`` unit tests of feeds.js (``tests/js/*.test.mjs``), run from pytest so
that the README's one test command runs them; and the client's size and dependency rules."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.browser import node_command

ROOT = Path(__file__).parents[2]
FEEDS_JS = ROOT / "src" / "sanic_feeds" / "static" / "feeds.js"


def test_node_unit_tests_of_feeds_js_pass() -> None:
    node = node_command()
    run = subprocess.run(
        [*node, "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # The runner found the tests (an empty directory passes too).
    passed = re.search(r"^# pass (\d+)$", run.stdout, re.MULTILINE)
    assert passed is not None and int(passed.group(1)) >= 20, run.stdout[-2000:]


def test_feeds_js_is_at_most_15_kb_and_imports_nothing() -> None:
    source = FEEDS_JS.read_text()
    assert len(source.encode()) <= 15_000
    assert re.search(r"^\s*import\b|\bimport\(|\brequire\(", source, re.MULTILINE) is None
