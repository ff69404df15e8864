"""The Redis broker's batched calls: concurrent publishes share round trips, keep the order
they were made in, and survive Redis forgetting the script; a burst of presence writes
(clients joining and leaving at once) shares one connection, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from sanic_feeds.brokers import Broker, BrokerOptions, create_broker
from sanic_feeds.brokers.store import publish_script
from sanic_feeds.errors import BrokerUnavailable
from tests.support.brokers import IgnoreDeliveries
from tests.support.tcp_proxy import RedisProxy


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[Broker]:
    broker = create_broker(redis_url, BrokerOptions(history_size=1000))
    await broker.start(IgnoreDeliveries())
    try:
        yield broker
    finally:
        await broker.close()


async def _evalsha_calls(admin: aioredis.Redis) -> int:
    stats = await admin.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_concurrent_publishes_keep_the_order_they_were_made_in(
    broker: Broker, redis_url: str
) -> None:
    admin = aioredis.from_url(redis_url)
    try:
        await admin.config_resetstat()
        positions = await asyncio.gather(*(broker.publish("burst", n) for n in range(300)))
        assert [p.offset for p in positions] == list(range(1, 301))
        # One EVALSHA per publish, however they were batched: none ran twice.
        # (Counted before the history read, a script call of its own.)
        assert await _evalsha_calls(admin) == 300
        history, _ = await broker.history("burst", since=0, limit=1000)
        assert [pub.data for pub in history] == list(range(300))
    finally:
        await admin.aclose()


async def test_a_flushed_script_is_loaded_again_and_nothing_runs_twice(
    broker: Broker, redis_url: str
) -> None:
    await broker.publish("kept", "before")
    admin = aioredis.from_url(redis_url)
    try:
        await admin.script_flush()
        positions = await asyncio.gather(*(broker.publish("kept", n) for n in range(20)))
    finally:
        await admin.aclose()
    assert [p.offset for p in positions] == list(range(2, 22))
    history, _ = await broker.history("kept", since=0, limit=100)
    assert [pub.data for pub in history] == ["before", *range(20)]


async def test_a_publish_overtaken_while_the_script_was_reloaded_fails_not_reorders(
    redis_url: str,
) -> None:
    """Redis forgot the script (a restart), and another client loaded it again between
    two commands of one pipeline: the pipeline's first publish found no script, the ones
    after it ran. Run again, the first would land after a later publish on its channel."""
    proxy = RedisProxy("127.0.0.1", int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    admin = aioredis.from_url(redis_url)
    broker = create_broker(proxy.url, BrokerOptions(history_size=100))
    try:
        await broker.start(IgnoreDeliveries())

        async def load_the_script_elsewhere() -> None:
            await admin.script_load(publish_script(sharded=False))

        async def reloaded_under(*publishes: tuple[str, str]) -> list[object]:
            await admin.script_flush()
            cut = proxy.interleaved
            proxy.interleave(b"EVALSHA", load_the_script_elsewhere)
            calls = (broker.publish(channel, data) for channel, data in publishes)
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            assert proxy.interleaved == cut + 1, "the publishes did not share one pipeline"
            return outcomes

        # Nothing later on its channel ran: loaded again and run, in order.
        alone, after = await reloaded_under(("alone", "a1"), ("ordered", "o1"))
        assert (getattr(alone, "offset", alone), getattr(after, "offset", after)) == (1, 1)
        # "o2" found no script, "o3" on its channel ran: "o2" fails rather than follow it.
        overtaken, elsewhere, later = await reloaded_under(
            ("ordered", "o2"), ("alone", "a2"), ("ordered", "o3")
        )
        assert isinstance(overtaken, BrokerUnavailable)
        assert getattr(elsewhere, "offset", elsewhere) == 2
        assert getattr(later, "offset", later) == 2
        history, _ = await broker.history("ordered", since=0, limit=10)
        assert [pub.data for pub in history] == ["o1", "o3"]
    finally:
        await broker.close()
        await admin.aclose()
        await proxy.close()


async def test_a_publish_cancelled_while_queued_does_not_disturb_the_others(
    broker: Broker,
) -> None:
    first = asyncio.create_task(broker.publish("mixed", "first"))
    dropped = asyncio.create_task(broker.publish("mixed", "dropped"))
    last = asyncio.create_task(broker.publish("mixed", "last"))
    await asyncio.sleep(0)
    dropped.cancel()
    assert (await first).offset == 1
    assert (await last).offset in (2, 3)
    with pytest.raises(asyncio.CancelledError):
        await dropped


async def test_publishing_on_a_closed_broker_fails_at_once(redis_url: str) -> None:
    broker = create_broker(redis_url)
    await broker.start(IgnoreDeliveries())
    await broker.close()
    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(broker.publish("late", 1), 5)


async def _connections_received(admin: aioredis.Redis) -> int:
    return int((await admin.info("stats"))["total_connections_received"])


async def test_a_burst_of_presence_writes_shares_a_connection_and_keeps_its_order(
    broker: Broker, redis_url: str
) -> None:
    """An instance's clients leave together (a restart closed them): each leave writes
    presence. One at a time, each took a pooled connection, and a burst after a Redis
    restart made a new connection per write."""
    admin = aioredis.from_url(redis_url)
    try:
        before = await _connections_received(admin)
        await asyncio.gather(
            *(broker.add_presence("crowd", f"c{n}", {"n": n}) for n in range(200)),
            *(broker.remove_presence("crowd", f"c{n}") for n in range(0, 200, 2)),
        )
        # The admin's own connection, and the batch's (the pool had one already).
        assert await _connections_received(admin) - before <= 2
    finally:
        await admin.aclose()
    # Each leave was written after its join, as they were made.
    assert sorted(await broker.presence("crowd")) == sorted(f"c{n}" for n in range(1, 200, 2))
