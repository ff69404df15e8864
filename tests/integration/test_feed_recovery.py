"""Recovery over /feed/<channel>?since=&epoch=: exactly what was missed, then live, or an
explicit ``recovered: false``; never partial."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.ws import (
    open_feed,
    publish_http,
    ready_is,
    recv_event,
    recv_messages,
    wait_until,
)

pytestmark = pytest.mark.integration


async def _resubscribe(ws_url: str, channel: str, offset: int, epoch: str) -> tuple[Any, Any]:
    """Open /feed with since/epoch; returns (the connection, its `subscribed` event)."""
    url = f"{ws_url}/feed/{channel}?since={offset}&epoch={epoch}"
    ws = await connect(url, open_timeout=10)
    subscribed = await recv_event(ws)
    assert subscribed["type"] == "subscribed", subscribed
    return ws, subscribed


async def _last_position(ws: ClientConnection, count: int) -> tuple[int, str]:
    messages = await recv_messages(ws, count)
    return messages[-1]["offset"], messages[-1]["epoch"]


async def test_a_subscriber_back_after_50_messages_gets_exactly_those_then_live(
    feeds_server_factory: Any, redis_url: str
) -> None:
    servers = [feeds_server_factory(broker=redis_url) for _ in range(2)]
    subscriber = await open_feed(servers[0].ws_url, "news")
    for n in range(5):
        await publish_http(servers[1].url, "news", n)
    offset, epoch = await _last_position(subscriber, 5)
    await subscriber.close()

    for n in range(5, 55):
        await publish_http(servers[1].url, "news", n)
    # Back on the other instance: recovery does not depend on where it was.
    back, subscribed = await _resubscribe(servers[1].ws_url, "news", offset, epoch)
    try:
        assert subscribed["recovered"] is True
        assert (subscribed["offset"], subscribed["epoch"]) == (55, epoch)
        await publish_http(servers[0].url, "news", "live")
        messages = await recv_messages(back, 51)
        assert [m["offset"] for m in messages] == list(range(6, 57))
        assert [m["data"] for m in messages] == [*range(5, 55), "live"]
    finally:
        await back.close()


@pytest.mark.parametrize("broker", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_subscriber_of_an_empty_channel_recovers_everything_published_while_away(
    feeds_server_factory: Any, request: pytest.FixtureRequest, broker: str
) -> None:
    """Greeted on a channel nothing was ever published to, it holds offset 0 and the
    channel's epoch, which the first publish keeps: coming back with them recovers it all."""
    url = "memory://" if broker == "memory" else request.getfixturevalue("redis_url")
    server = feeds_server_factory(broker=url)
    ws = await connect(f"{server.ws_url}/feed/empty", open_timeout=10)
    greeted = await recv_event(ws)
    await ws.close()
    assert greeted["type"] == "subscribed", greeted
    assert greeted["offset"] == 0
    assert isinstance(greeted["epoch"], str) and greeted["epoch"]
    bodies = [(await publish_http(server.url, "empty", n))[1] for n in range(5)]
    assert [(b["offset"], b["epoch"]) for b in bodies] == [
        (n, greeted["epoch"]) for n in range(1, 6)
    ]

    back, subscribed = await _resubscribe(server.ws_url, "empty", 0, greeted["epoch"])
    try:
        assert subscribed["recovered"] is True
        assert (subscribed["offset"], subscribed["epoch"]) == (5, greeted["epoch"])
        await publish_http(server.url, "empty", "live")
        messages = await recv_messages(back, 6)
        assert [m["offset"] for m in messages] == [1, 2, 3, 4, 5, 6]
        assert [m["data"] for m in messages] == [0, 1, 2, 3, 4, "live"]
        assert {m["epoch"] for m in messages} == {greeted["epoch"]}
    finally:
        await back.close()


async def test_recovery_while_publishing_goes_on_has_no_gap_and_no_duplicate(
    feeds_server_factory: Any, redis_url: str
) -> None:
    servers = [feeds_server_factory(broker=redis_url) for _ in range(2)]
    subscriber = await open_feed(servers[0].ws_url, "ticks")
    total = 300
    published = 0

    async def publish_all() -> None:
        nonlocal published
        for n in range(total):
            status, body = await publish_http(servers[1].url, "ticks", n)
            assert status == 200, body
            published += 1

    publishing = asyncio.create_task(publish_all())
    first = await recv_messages(subscriber, 20)
    seen = [m["data"] for m in first]
    offset, epoch = first[-1]["offset"], first[-1]["epoch"]
    await subscriber.close()
    await wait_until(lambda: published >= offset + 40, what="40 more published while away")

    back, subscribed = await _resubscribe(servers[0].ws_url, "ticks", offset, epoch)
    try:
        assert subscribed["recovered"] is True
        await publishing
        rest = await recv_messages(back, total - offset)
        assert [m["offset"] for m in rest] == list(range(offset + 1, total + 1))
        assert seen + [m["data"] for m in rest] == list(range(total))
    finally:
        await back.close()


async def test_expired_history_is_recovered_false_and_the_feed_goes_on_from_now(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(broker=redis_url, args=["--history-ttl", "1"])
    subscriber = await open_feed(server.ws_url, "brief")
    await publish_http(server.url, "brief", "seen")
    offset, epoch = await _last_position(subscriber, 1)
    await subscriber.close()
    await publish_http(server.url, "brief", "missed")
    await asyncio.sleep(1.5)

    back, subscribed = await _resubscribe(server.ws_url, "brief", offset, epoch)
    try:
        assert subscribed["recovered"] is False
        await publish_http(server.url, "brief", "live")
        [message] = await recv_messages(back, 1)
        assert message["data"] == "live"
    finally:
        await back.close()


async def test_more_missed_than_recovery_max_is_recovered_false_not_partial(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(broker=redis_url, args=["--recovery-max", "10"])
    subscriber = await open_feed(server.ws_url, "busy")
    await publish_http(server.url, "busy", "seen")
    offset, epoch = await _last_position(subscriber, 1)
    await subscriber.close()
    for n in range(11):
        await publish_http(server.url, "busy", n)

    back, subscribed = await _resubscribe(server.ws_url, "busy", offset, epoch)
    try:
        assert subscribed["recovered"] is False
        assert subscribed["offset"] == 12
        await publish_http(server.url, "busy", "live")
        [message] = await recv_messages(back, 1)
        assert (message["offset"], message["data"]) == (13, "live")
    finally:
        await back.close()


async def test_after_redis_restarted_without_persistence_recovery_is_refused(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    server = feeds_server_factory(broker=private_redis.url)
    subscriber = await open_feed(server.ws_url, "volatile")
    await publish_http(server.url, "volatile", "seen")
    offset, epoch = await _last_position(subscriber, 1)
    await subscriber.close()

    private_redis.restart()
    await wait_until(lambda: ready_is(server, 200), what="/ready back after the restart")
    status, body = await publish_http(server.url, "volatile", "after")
    assert status == 200, body
    assert body["epoch"] != epoch

    back, subscribed = await _resubscribe(server.ws_url, "volatile", offset, epoch)
    try:
        assert subscribed["recovered"] is False
        assert (subscribed["offset"], subscribed["epoch"]) == (1, body["epoch"])
    finally:
        await back.close()


async def test_an_epoch_from_an_empty_channel_is_refused_after_redis_lost_its_data(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    """The epoch a subscriber of an empty channel got names history that the restart
    (without persistence) lost: what is published after it is another epoch."""
    server = feeds_server_factory(broker=private_redis.url)
    ws = await connect(f"{server.ws_url}/feed/void", open_timeout=10)
    greeted = await recv_event(ws)
    await ws.close()
    assert (greeted["offset"], bool(greeted["epoch"])) == (0, True)

    private_redis.restart()
    await wait_until(lambda: ready_is(server, 200), what="/ready back after the restart")
    status, body = await publish_http(server.url, "void", "after")
    assert status == 200, body
    assert body["offset"] == 1
    assert body["epoch"] != greeted["epoch"]

    back, subscribed = await _resubscribe(server.ws_url, "void", 0, greeted["epoch"])
    try:
        assert subscribed["recovered"] is False
        assert (subscribed["offset"], subscribed["epoch"]) == (1, body["epoch"])
    finally:
        await back.close()
