from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support import ws


@pytest.fixture(autouse=True)
async def close_websockets() -> AsyncIterator[None]:
    """Close every client a test opened with ``open_feed``, however the test ended."""
    yield
    await ws.close_all()
