"""``FEEDS_REQUIRE_BROWSER=1`` turns a browser or Node test that cannot run into a failure."""

from __future__ import annotations

import pytest

from tests.support.browser import REQUIRE_ENV, require_or_skip


def test_without_the_variable_a_missing_browser_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        require_or_skip("no chromium")


@pytest.mark.parametrize("value", ["1", "yes"])
def test_with_the_variable_a_missing_browser_fails(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(REQUIRE_ENV, value)
    with pytest.raises(pytest.fail.Exception, match="FEEDS_REQUIRE_BROWSER=1 and no chromium"):
        require_or_skip("no chromium")
