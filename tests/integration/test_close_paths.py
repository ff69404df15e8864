"""What a client is told right before the server closes its connection.

An event queued in the same loop iteration as the close must reach the
client before the close frame: it is the only explanation the client gets.
"""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.support.ws import close_code, recv_event

pytestmark = pytest.mark.integration


async def test_subscribing_while_the_broker_is_down_says_unavailable_then_closes_1013(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    server = feeds_server_factory(broker=private_redis.url)
    private_redis.stop()
    async with connect(f"{server.ws_url}/feed/news", open_timeout=10) as ws:
        event = await recv_event(ws)
        assert event["type"] == "error"
        assert event["code"] == "unavailable"
        assert await close_code(ws) == 1013
