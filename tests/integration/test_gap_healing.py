"""Live gap healing: an instance whose pub/sub connection is cut while another instance keeps
publishing fills the gap from history, so its subscribers see every offset once, in order.

Each test prints how long the heal took (``pytest -s`` shows it): the worst delay between a
publish being accepted and a subscriber receiving it, against the same figure before the cut.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection

from tests.support.tcp_proxy import RedisProxy
from tests.support.ws import (
    open_feed,
    publish_http,
    ready_is,
    recv_event,
    recv_messages,
    wait_until,
)

pytestmark = pytest.mark.integration

CHANNEL = "healing"
SUBSCRIBERS = 3


class Feed:
    """Every publish accepted (offset -> when the request was sent) and every message
    received by each subscriber (offset, data, when)."""

    def __init__(self) -> None:
        self.sent_at: dict[int, float] = {}
        self.received: list[list[tuple[int, Any, float]]] = [[] for _ in range(SUBSCRIBERS)]

    async def publish_continuously(self, base_url: str, total: int, on_publish: Any = None) -> None:
        for n in range(total):
            # An outage answers 503; the retry carries the same key, so a publish whose
            # reply was lost is not published twice.
            while True:
                started = time.monotonic()
                status, body = await publish_http(
                    base_url, CHANNEL, n, extra={"idempotency_key": f"n{n}"}
                )
                if status == 200:
                    self.sent_at.setdefault(body["offset"], started)
                    break
                assert status == 503, body
                await asyncio.sleep(0.05)
            if on_publish is not None:
                await on_publish(n)
            await asyncio.sleep(0.003)

    async def read(self, index: int, ws: ClientConnection, total: int) -> None:
        received = self.received[index]
        while len(received) < total:
            event = await recv_event(ws, 30)
            if event["type"] == "message":
                received.append((event["offset"], event["data"], time.monotonic()))

    def worst_delay_s(self, offsets: range) -> float:
        return max(
            when - self.sent_at[offset]
            for received in self.received
            for offset, _, when in received
            if offset in offsets
        )


async def _subscribers(ws_url: str) -> list[ClientConnection]:
    return [await open_feed(ws_url, CHANNEL) for _ in range(SUBSCRIBERS)]


async def _kill_pubsub_of_subscribed_instance(redis_url: str) -> int:
    """CLIENT KILL the pub/sub connection subscribed to the channel (the subscribers'
    instance), not the publisher's."""
    admin = aioredis.from_url(redis_url)
    try:
        for client in await admin.client_list(_type="pubsub"):
            if int(client["sub"]) >= 2:  # its heartbeat and the channel
                return int(await admin.client_kill_filter(_id=client["id"]))
        raise AssertionError("no pub/sub connection is subscribed to the channel")
    finally:
        await admin.aclose()


async def test_pubsub_connection_killed_mid_stream_heals_with_every_offset_once_in_order(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    subscribed_instance = feeds_server_factory(broker=private_redis.url)
    publishing_instance = feeds_server_factory(broker=private_redis.url)
    subscribers = await _subscribers(subscribed_instance.ws_url)
    feed = Feed()
    total = 600
    cut_at = 150
    killed_at_offset = 0

    async def cut(n: int) -> None:
        nonlocal killed_at_offset
        if n == cut_at:
            killed_at_offset = max(feed.sent_at)
            assert await _kill_pubsub_of_subscribed_instance(private_redis.url) == 1

    readers = [asyncio.create_task(feed.read(i, ws, total)) for i, ws in enumerate(subscribers)]
    await feed.publish_continuously(publishing_instance.url, total, on_publish=cut)
    await asyncio.wait_for(asyncio.gather(*readers), 60)

    for received in feed.received:
        assert [offset for offset, _, _ in received] == list(range(1, total + 1))
        assert [data for _, data, _ in received] == list(range(total))
    before = feed.worst_delay_s(range(1, killed_at_offset + 1))
    healing = feed.worst_delay_s(range(killed_at_offset + 1, total + 1))
    print(
        f"\nCLIENT KILL TYPE pubsub: {total} published, 0 lost, 0 duplicated; worst delay "
        f"{healing * 1000:.0f} ms after the kill (before it: {before * 1000:.0f} ms)"
    )


async def test_redis_restart_with_aof_heals_with_every_offset_once_in_order(
    feeds_server_factory: Any, private_redis_aof: Any
) -> None:
    subscribed_instance = feeds_server_factory(broker=private_redis_aof.url)
    publishing_instance = feeds_server_factory(broker=private_redis_aof.url)
    subscribers = await _subscribers(subscribed_instance.ws_url)
    feed = Feed()
    total = 400
    restart_at = 100
    restart: asyncio.Task[None] | None = None
    restarted_after_offset = 0

    async def restart_redis(n: int) -> None:
        nonlocal restart, restarted_after_offset
        if n == restart_at:
            restarted_after_offset = max(feed.sent_at)
            restart = asyncio.create_task(asyncio.to_thread(private_redis_aof.restart))

    readers = [asyncio.create_task(feed.read(i, ws, total)) for i, ws in enumerate(subscribers)]
    await feed.publish_continuously(publishing_instance.url, total, on_publish=restart_redis)
    assert restart is not None
    await restart
    await asyncio.wait_for(asyncio.gather(*readers), 60)

    for received in feed.received:
        assert [offset for offset, _, _ in received] == list(range(1, total + 1))
        assert [data for _, data, _ in received] == list(range(total))
    healing = feed.worst_delay_s(range(restarted_after_offset + 1, total + 1))
    print(
        f"\nRedis restart (AOF): {total} published, 0 lost, 0 duplicated; worst delay "
        f"{healing * 1000:.0f} ms after the restart"
    )


async def test_a_deaf_pubsub_connection_turns_ready_false_then_reconnects_and_heals(
    feeds_server_factory: Any, redis_url: str
) -> None:
    """The connection stays open but Redis' messages stop arriving (a half-open TCP
    connection): only the instance's own heartbeat, missing, can tell. Nothing is published
    after the outage: no later message reveals the gap, only the check of every channel
    against its history after the reconnect (``Hub.on_resubscribed``) finds it."""
    proxy = RedisProxy("127.0.0.1", int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    try:
        # The proxy runs on this event loop: start the server from a thread so the loop
        # keeps forwarding while the start waits for /ready.
        # A gap longer than --max-queue is healed as one batch, not an overflow.
        deafened = await asyncio.to_thread(
            feeds_server_factory, broker=proxy.url, args=["--max-queue", "10"]
        )
        publishing = feeds_server_factory(broker=redis_url)
        subscriber = await open_feed(deafened.ws_url, CHANNEL)
        await publish_http(publishing.url, CHANNEL, "before")
        assert proxy.deafen_open_connections() >= 2  # the pool's and pub/sub's
        for n in range(40):
            status, body = await publish_http(publishing.url, CHANNEL, n)
            assert status == 200, body
        await wait_until(lambda: ready_is(deafened, 503), 15, "/ready turns 503")
        await wait_until(lambda: ready_is(deafened, 200), 15, "/ready back")
        messages = await recv_messages(subscriber, 41)
        assert [m["offset"] for m in messages] == list(range(1, 42))
        assert [m["data"] for m in messages] == ["before", *range(40)]
        assert "went deaf" in deafened.log()
    finally:
        await proxy.close()
