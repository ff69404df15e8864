"""``sanic_feeds.client.FeedsClient`` against real servers: it reconnects by itself and the
application sees a gap-free stream, or an explicit ``Subscribed(recovered=False)``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sanic_feeds import Publication
from sanic_feeds.client import FeedsClient, Subscribed
from tests.support.ws import publish_http, wait_until

pytestmark = pytest.mark.integration


async def _collect(client: FeedsClient, into: list[Any]) -> None:
    """Publications and subscription notices (this test reads no joins and leaves)."""
    async for event in client:
        if isinstance(event, Publication | Subscribed):
            into.append(event)


async def test_the_client_rides_over_its_server_being_killed_and_sees_every_message_once(
    feeds_server_factory: Any, redis_url: str
) -> None:
    serving = feeds_server_factory(broker=redis_url)
    publishing = feeds_server_factory(broker=redis_url)
    total = 200
    events: list[Any] = []
    async with FeedsClient(serving.ws_url, backoff_min_s=0.05, backoff_max_s=0.5) as client:
        first = await client.subscribe("orders")
        assert (first.recovered, first.offset) == (False, 0)
        collecting = asyncio.create_task(_collect(client, events))
        for n in range(total):
            status, body = await publish_http(publishing.url, "orders", n)
            assert status == 200, body
            if n == 60:
                serving.kill()
            if n == 120:
                await asyncio.to_thread(serving.start)
        await wait_until(
            lambda: sum(isinstance(e, Publication) for e in events) >= total,
            timeout_s=30,
            what="every message through the client",
        )
        collecting.cancel()

    messages = [e for e in events if isinstance(e, Publication)]
    assert [m.offset for m in messages] == list(range(1, total + 1))
    assert [m.data for m in messages] == list(range(total))
    renewed = [e for e in events if isinstance(e, Subscribed) and e.resumed]
    assert renewed and all(e.recovered for e in renewed), renewed


async def test_when_history_is_lost_the_client_says_not_recovered(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    server = feeds_server_factory(broker=private_redis.url)
    events: list[Any] = []
    async with FeedsClient(server.ws_url, backoff_min_s=0.05, backoff_max_s=0.5) as client:
        await client.subscribe("volatile")
        collecting = asyncio.create_task(_collect(client, events))
        await publish_http(server.url, "volatile", "before")
        await wait_until(lambda: events, what="the first message")

        private_redis.restart()
        await wait_until(
            lambda: any(isinstance(e, Subscribed) and e.resumed for e in events),
            timeout_s=30,
            what="the client to resubscribe after the restart",
        )
        await publish_http(server.url, "volatile", "after")
        await wait_until(lambda: len(events) >= 4, what="the message after the restart")
        collecting.cancel()

    greeted, before, renewed, after = events
    assert isinstance(greeted, Subscribed) and not greeted.resumed
    assert isinstance(before, Publication) and before.data == "before"
    assert isinstance(renewed, Subscribed) and renewed.resumed and renewed.recovered is False
    assert isinstance(after, Publication) and after.data == "after"
    assert after.epoch != before.epoch
