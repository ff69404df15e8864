from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support import ws


@pytest.fixture(autouse=True)
async def close_websockets(feeds_server_factory: Any) -> AsyncIterator[None]:
    """Close every client a test opened with ``open_feed``, however the test ended.

    It asks for the server factory so that it is torn down first: the clients
    close while their servers still run and answer, rather than leaving each
    server waiting, as it stops, for clients whose event loop no longer runs."""
    yield
    await ws.close_all()
