"""``Publisher``'s retry buffer against a broker that fails on command: no Redis, no sockets.

What only a real Redis can show (a restart, a lost reply) stays in
``tests/integration/test_publisher.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sanic_feeds import BrokerUnavailable, PublishBufferFull, Publisher
from sanic_feeds.brokers.memory import MemoryBroker
from sanic_feeds.events import StreamPosition


class FlakyBroker(MemoryBroker):
    """A memory broker whose publishes fail while ``down`` is set, counting the attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.attempts = 0
        self.refuse_data: object = object()

    async def publish(self, channel: str, data: Any, **kwargs: Any) -> StreamPosition:
        self.attempts += 1
        if self.down:
            raise BrokerUnavailable("broker unavailable: down on purpose")
        if data == self.refuse_data:
            raise TypeError("data that cannot be encoded")
        return await super().publish(channel, data, **kwargs)


async def history_data(broker: MemoryBroker, channel: str) -> list[Any]:
    publications, _ = await broker.history(channel, 0, 100)
    return [pub.data for pub in publications]


async def test_publications_wait_while_the_broker_is_down_and_leave_in_order() -> None:
    broker = FlakyBroker()
    async with Publisher(broker, retry_buffer=10, retry_for_s=10) as pub:
        broker.down = True
        futures = [pub.publish_nowait("news", n) for n in range(5)]
        await asyncio.sleep(0.3)
        assert pub.buffered == 5 and broker.attempts > 1  # retried, not given up
        broker.down = False
        positions = await asyncio.gather(*futures)
    assert [p.offset for p in positions] == [1, 2, 3, 4, 5]
    assert await history_data(broker, "news") == [0, 1, 2, 3, 4]


async def test_a_full_buffer_refuses_and_a_publication_past_its_deadline_fails() -> None:
    broker = FlakyBroker()
    pub = Publisher(broker, retry_buffer=2, retry_for_s=0.5)
    await pub.__aenter__()
    broker.down = True
    first = pub.publish_nowait("news", 1)
    second = pub.publish_nowait("news", 2)
    with pytest.raises(PublishBufferFull):
        pub.publish_nowait("news", 3)
    assert pub.buffered == 2
    for future in (first, second):
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(future, 5)
    assert pub.buffered == 0
    await pub.close()
    assert await history_data(broker, "news") == []


async def test_publish_waits_for_room_in_a_full_buffer() -> None:
    broker = FlakyBroker()
    async with Publisher(broker, retry_buffer=1, retry_for_s=10) as pub:
        broker.down = True
        first = pub.publish_nowait("news", "first")
        second = asyncio.ensure_future(pub.publish("news", "second"))
        await asyncio.sleep(0.1)
        assert not second.done()
        broker.down = False
        assert (await first).offset == 1
        assert (await asyncio.wait_for(second, 5)).offset == 2


async def test_an_error_that_no_retry_can_fix_fails_that_publication_alone() -> None:
    broker = FlakyBroker()
    broker.refuse_data = "poison"
    async with Publisher(broker, retry_buffer=5) as pub:
        futures = [pub.publish_nowait("news", data) for data in ("a", "poison", "b")]
        results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[1], TypeError)
    assert [r.offset for r in results if isinstance(r, StreamPosition)] == [1, 2]
    assert broker.attempts == 3


async def test_closing_while_a_cancelled_publish_waits_does_not_spin() -> None:
    """A caller that gave up on its publish (wait_for) leaves it queued; close() waits for
    it to be given up, asleep, not polling."""
    broker = FlakyBroker()
    pub = Publisher(broker, retry_buffer=5, retry_for_s=1.0)
    await pub.__aenter__()
    broker.down = True
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pub.publish("news", 1), 0.1)
    wall, cpu = time.monotonic(), time.process_time()
    await asyncio.wait_for(pub.close(), 20)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    assert wall > 0.5
    assert cpu < wall / 2, (cpu, wall)
    # Full jitter from 50 ms, doubling up to 2 s: a handful of attempts in a second.
    assert broker.attempts < 20


async def test_a_broker_object_is_started_and_closed_by_the_publisher() -> None:
    broker = FlakyBroker()
    async with Publisher(broker) as pub:
        assert (await pub.publish("news", "hi")).offset == 1
    assert await history_data(broker, "news") == ["hi"]
