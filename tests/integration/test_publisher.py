"""``Publisher`` and idempotency keys: a worker publishing through a Redis restart loses
nothing and duplicates nothing."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sanic_feeds import BrokerUnavailable, Publisher
from sanic_feeds.brokers import Broker, BrokerOptions, create_broker
from sanic_feeds.errors import BadRequest
from tests.support.brokers import IgnoreDeliveries
from tests.support.feeds_server import free_port
from tests.support.tcp_proxy import RedisProxy


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    broker = create_broker(url, BrokerOptions(history_size=1000))
    await broker.start(IgnoreDeliveries())
    try:
        yield broker
    finally:
        await broker.close()


async def _history_data(broker: Broker, channel: str) -> list[Any]:
    publications, _ = await broker.history(channel, since=0, limit=10_000)
    return [pub.data for pub in publications]


async def test_a_repeated_idempotency_key_publishes_once_and_returns_the_first_position(
    broker: Broker,
) -> None:
    first = await broker.publish("jobs", "done", idempotency_key="job-7")
    await broker.publish("jobs", "other")
    again = await broker.publish("jobs", "done", idempotency_key="job-7")
    assert again == first
    assert await _history_data(broker, "jobs") == ["done", "other"]


async def test_idempotency_keys_belong_to_their_channel(broker: Broker) -> None:
    a = await broker.publish("a", 1, idempotency_key="k")
    b = await broker.publish("b", 1, idempotency_key="k")
    assert (a.offset, b.offset) == (1, 1)
    assert await _history_data(broker, "b") == [1]


async def test_a_lost_reply_is_retried_without_a_duplicate(redis_server: Any) -> None:
    proxy = RedisProxy("127.0.0.1", redis_server.port)
    await proxy.start()
    try:
        async with Publisher(proxy.url, retry_buffer=10) as pub:
            await pub.publish("orders", "warm-up")
            proxy.lose_reply_to(b"EVALSHA")
            position = await pub.publish("orders", "the one")
        assert proxy.replies_lost == 1
        assert position.offset == 2
        reader = create_broker(redis_server.url)
        await reader.start(IgnoreDeliveries())
        try:
            assert await _history_data(reader, "orders") == ["warm-up", "the one"]
        finally:
            await reader.close()
    finally:
        await proxy.close()


async def test_a_worker_publishing_through_a_redis_restart_loses_and_duplicates_nothing(
    private_redis_aof: Any,
) -> None:
    total = 300
    async with Publisher(
        private_redis_aof.url, history_size=1000, retry_buffer=50, retry_for_s=30
    ) as pub:

        async def publish_all() -> list[int]:
            offsets = []
            for n in range(total):
                offsets.append((await pub.publish("work", n)).offset)
                await asyncio.sleep(0.002)
            return offsets

        publishing = asyncio.create_task(publish_all())
        await asyncio.sleep(0.2)
        await asyncio.to_thread(private_redis_aof.restart)
        offsets = await asyncio.wait_for(publishing, 60)

    assert offsets == list(range(1, total + 1))
    reader = create_broker(private_redis_aof.url, BrokerOptions(history_size=1000))
    await reader.start(IgnoreDeliveries())
    try:
        assert await _history_data(reader, "work") == list(range(total))
    finally:
        await reader.close()


async def test_without_a_retry_buffer_publish_fails_fast_when_redis_is_down(
    private_redis: Any,
) -> None:
    async with Publisher(private_redis.url) as pub:
        private_redis.kill()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await pub.publish("news", 1)
        assert time.monotonic() - started < 10
        private_redis.start()
        assert (await pub.publish("news", 2)).offset == 1


async def test_bad_input_is_refused_before_anything_is_queued(redis_url: str) -> None:
    async with Publisher(redis_url, retry_buffer=5) as pub:
        with pytest.raises(BadRequest):
            pub.publish_nowait("news", 1, idempotency_key="has spaces")
        with pytest.raises(BadRequest):
            await pub.publish("news", 1, idempotency_key="")
        assert pub.buffered == 0
    with pytest.raises(ValueError, match="memory://"):
        Publisher("memory://")
    with pytest.raises(ValueError, match="retry_buffer"):
        Publisher(f"redis://127.0.0.1:{free_port()}/0", retry_buffer=-1)
    with pytest.raises(ValueError, match="idempotency key"):
        Publisher(redis_url, retry_buffer=5, retry_for_s=301)


async def test_closing_a_broker_leaves_no_task_and_no_open_socket_behind(redis_url: str) -> None:
    before = asyncio.all_tasks()
    broker = create_broker(redis_url)
    await broker.start(IgnoreDeliveries())
    await broker.subscribe("news")
    await broker.close()
    await asyncio.sleep(0.05)
    assert [task for task in asyncio.all_tasks() - before if not task.done()] == []
    del broker
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
