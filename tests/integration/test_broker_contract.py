"""The broker contract (``sanic_feeds.brokers.base.Broker``), one suite for every broker.

Each test runs against ``memory://``, ``redis://`` (the shared test Redis) and
``redis+cluster://`` (the shared 3-primary test cluster), built with ``create_broker`` and
started with a recording handler. Direct broker calls, no server.
A few promises only make sense with more than one process or a broker that can go away;
those run on Redis only, at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import orjson
import pytest

from sanic_feeds.brokers import Broker, BrokerOptions, InstanceStatus, create_broker
from sanic_feeds.errors import BrokerUnavailable
from sanic_feeds.events import Event, Join, Leave, Publication, StreamPosition
from tests.support.redis_server import RedisServer, free_port

# The redis and cluster cases get their URL through ``request.getfixturevalue``, which
# collection cannot see: their mark is what makes them ``redis`` tests (``-m redis``,
# FEEDS_REQUIRE_REDIS).
BROKERS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.redis),
]


class Recorder:
    """A ``BrokerHandler`` that keeps everything delivered to it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.resubscribed = 0
        #: Channels named by ``on_channels_resubscribed``, in order.
        self.channels_resubscribed: list[str] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def on_resubscribed(self) -> None:
        self.resubscribed += 1

    def on_channels_resubscribed(self, channels: Collection[str]) -> None:
        self.channels_resubscribed.extend(channels)

    def publications(self, channel: str) -> list[Publication]:
        return [e for e in self.events if isinstance(e, Publication) and e.channel == channel]

    def on(self, channel: str) -> list[Event]:
        return [e for e in self.events if e.channel == channel]

    async def wait_for(self, channel: str, count: int, timeout_s: float = 5.0) -> list[Event]:
        """The first ``count`` events of ``channel``, once they have all arrived."""
        deadline = time.monotonic() + timeout_s
        while len(self.on(channel)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{channel!r}: got {self.on(channel)}, wanted {count} events")
            await asyncio.sleep(0.01)
        return self.on(channel)[:count]

    async def wait_pubs(self, channel: str, count: int) -> list[Publication]:
        """Like ``wait_for``, for a channel that carries only publications."""
        events = await self.wait_for(channel, count)
        assert all(isinstance(e, Publication) for e in events), events
        return [e for e in events if isinstance(e, Publication)]


StartBroker = Callable[..., Awaitable[tuple[Broker, Recorder]]]


@pytest.fixture(params=BROKERS)
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue(
        "redis_cluster_url" if request.param == "cluster" else "redis_url"
    )
    return url


@pytest.fixture
async def start_broker(broker_url: str) -> AsyncIterator[StartBroker]:
    """``await start_broker(**BrokerOptions fields)`` -> a started (broker, recorder); every
    broker it made is closed at teardown."""
    started: list[Broker] = []

    async def start(**options: Any) -> tuple[Broker, Recorder]:
        options.setdefault("instance_id", f"contract-{secrets.token_hex(4)}")
        broker = create_broker(broker_url, BrokerOptions(**options))
        recorder = Recorder()
        await broker.start(recorder)
        started.append(broker)
        return broker, recorder

    yield start
    for broker in reversed(started):
        await broker.close()


@pytest.fixture
async def started(start_broker: StartBroker) -> tuple[Broker, Recorder]:
    return await start_broker()


@pytest.fixture
def broker(started: tuple[Broker, Recorder]) -> Broker:
    return started[0]


@pytest.fixture
def recorder(started: tuple[Broker, Recorder]) -> Recorder:
    return started[1]


def offsets(pubs: list[Any]) -> list[int]:
    return [pub.offset for pub in pubs]


# -- lifecycle


async def test_ready_once_started_and_not_after_close(broker: Broker) -> None:
    # Redis: ready once its own heartbeat came back through pub/sub (a second at most).
    deadline = time.monotonic() + 5
    while not broker.ready:
        assert time.monotonic() < deadline, "never ready"
        await asyncio.sleep(0.02)
    await broker.close()
    assert not broker.ready


async def test_close_is_idempotent(broker: Broker) -> None:
    await broker.close()
    await broker.close()


# -- offsets and epochs


async def test_publish_assigns_increasing_offsets_from_one_in_one_epoch(broker: Broker) -> None:
    positions = [await broker.publish("news", n) for n in range(5)]
    assert [p.offset for p in positions] == [1, 2, 3, 4, 5]
    epoch = positions[0].epoch
    assert isinstance(epoch, str) and epoch
    assert {p.epoch for p in positions} == {epoch}
    assert await broker.position("news") == StreamPosition(5, epoch)


async def test_position_of_a_fresh_channel_has_an_epoch_that_the_first_publish_keeps(
    broker: Broker,
) -> None:
    # The epoch exists from the first read of the position (a subscription), not from the
    # first publish: a client greeted with (0, epoch) on an empty channel can recover.
    fresh = await broker.position("nothing-yet")
    assert fresh.offset == 0
    assert isinstance(fresh.epoch, str) and fresh.epoch
    assert await broker.position("nothing-yet") == fresh
    assert await broker.publish("nothing-yet", "first") == StreamPosition(1, fresh.epoch)
    assert await broker.position("nothing-yet") == StreamPosition(1, fresh.epoch)
    pubs, position = await broker.history("nothing-yet", 0, 10)
    assert [(p.offset, p.epoch, p.data) for p in pubs] == [(1, fresh.epoch, "first")]
    assert position == StreamPosition(1, fresh.epoch)


async def test_peek_position_reads_without_creating_anything(broker: Broker) -> None:
    # Anyone may read a channel over HTTP, as often as they like: nothing may be created.
    assert await broker.peek_position("never-used") is None
    assert await broker.peek_position("never-used") is None
    created = await broker.position("never-used")
    assert created.offset == 0
    assert await broker.peek_position("never-used") == created
    published = await broker.publish("never-used", 1)
    assert await broker.peek_position("never-used") == published


async def test_publish_refuses_data_nested_deeper_than_events_can_carry(
    broker: Broker, recorder: Recorder
) -> None:
    from sanic_feeds.codec import MAX_DATA_DEPTH
    from sanic_feeds.errors import BadRequest

    def nested(depth: int) -> Any:
        value: Any = []
        for _ in range(depth - 1):
            value = [value]
        return value

    await broker.subscribe("deep")
    for depth in (MAX_DATA_DEPTH + 1, 255, 1023):
        with pytest.raises(BadRequest):
            await broker.publish("deep", nested(depth))
    with pytest.raises(BadRequest):
        await broker.publish("deep", {1: "not a JSON key"})
    assert await broker.peek_position("deep") is None  # nothing was published
    assert (await broker.publish("deep", nested(MAX_DATA_DEPTH))).offset == 1
    [delivered] = await recorder.wait_pubs("deep", 1)
    assert delivered.data == nested(MAX_DATA_DEPTH)


async def test_history_of_a_fresh_channel_creates_the_same_epoch(broker: Broker) -> None:
    pubs, position = await broker.history("read-first", 0, 10)
    assert pubs == []
    assert position.offset == 0 and position.epoch
    assert await broker.position("read-first") == position
    assert await broker.publish("read-first", 1) == StreamPosition(1, position.epoch)


async def test_reads_racing_the_first_publish_agree_on_one_epoch(broker: Broker) -> None:
    for n in range(20):
        channel = f"race-{n}"
        results = await asyncio.gather(
            broker.position(channel),
            broker.publish(channel, "a"),
            broker.history(channel, 0, 10),
            broker.position(channel),
            broker.publish(channel, "b"),
        )
        first, a, (_, read), second, b = results
        assert isinstance(first, StreamPosition) and isinstance(second, StreamPosition)
        assert isinstance(read, StreamPosition)
        assert isinstance(a, StreamPosition) and isinstance(b, StreamPosition)
        assert {first.epoch, a.epoch, read.epoch, second.epoch, b.epoch} == {a.epoch}
        assert sorted([a.offset, b.offset]) == [1, 2]


async def test_channels_have_separate_offsets(broker: Broker) -> None:
    a1 = await broker.publish("a", 1)
    b1 = await broker.publish("b", 1)
    a2 = await broker.publish("a", 2)
    b2 = await broker.publish("b", 2)
    b3 = await broker.publish("b", 3)
    assert [a1.offset, a2.offset] == [1, 2]
    assert [b1.offset, b2.offset, b3.offset] == [1, 2, 3]
    assert await broker.position("a") == StreamPosition(2, a1.epoch)
    assert await broker.position("b") == StreamPosition(3, b1.epoch)


async def test_concurrent_publishes_get_distinct_consecutive_offsets(broker: Broker) -> None:
    positions = await asyncio.gather(*(broker.publish("busy", n) for n in range(50)))
    assert sorted(p.offset for p in positions) == list(range(1, 51))


async def test_epoch_is_stable_across_publishes_and_subscriptions(broker: Broker) -> None:
    first = await broker.publish("stable", "x")
    await broker.subscribe("stable")
    await broker.publish("stable", "y")
    await broker.unsubscribe("stable")
    last = await broker.publish("stable", "z")
    assert last == StreamPosition(3, first.epoch)


async def test_a_new_epoch_when_the_channel_state_expired(start_broker: StartBroker) -> None:
    broker, _ = await start_broker(history_ttl_s=1, meta_ttl_s=1)
    old = await broker.publish("short-lived", "before")
    await asyncio.sleep(1.3)
    renewed = await broker.position("short-lived")
    assert renewed.offset == 0
    assert renewed.epoch and renewed.epoch != old.epoch
    new = await broker.publish("short-lived", "after")
    assert new == StreamPosition(1, renewed.epoch)
    pubs, position = await broker.history("short-lived", None, 10)
    assert [(p.offset, p.epoch, p.data) for p in pubs] == [(1, new.epoch, "after")]
    assert position == new


async def test_an_epoch_created_by_a_read_expires_with_the_channel_state(
    start_broker: StartBroker,
) -> None:
    # A read that creates the epoch gives it the lifetime a publish gives it, no longer.
    broker, _ = await start_broker(history_ttl_s=1, meta_ttl_s=1)
    old = await broker.position("read-only")
    await asyncio.sleep(1.3)
    new = await broker.position("read-only")
    assert new.offset == 0
    assert new.epoch and new.epoch != old.epoch


# -- delivery


async def test_subscribed_channel_delivers_in_offset_order(
    broker: Broker, recorder: Recorder
) -> None:
    await broker.subscribe("live")
    positions = [
        await broker.publish("live", {"n": n}, client="c1" if n % 2 else None) for n in range(20)
    ]
    delivered = await recorder.wait_pubs("live", 20)
    assert all(isinstance(e, Publication) for e in delivered)
    assert offsets(delivered) == list(range(1, 21))
    assert [p.data for p in delivered] == [{"n": n} for n in range(20)]
    assert {p.epoch for p in delivered} == {positions[0].epoch}
    assert [p.client for p in delivered] == ["c1" if n % 2 else None for n in range(20)]
    assert all(isinstance(p.ts_ms, int) and p.ts_ms > 0 for p in delivered)


async def test_any_json_value_is_delivered_as_published(broker: Broker, recorder: Recorder) -> None:
    values: list[Any] = [None, True, 0, -1.5, "text", "", [1, "two", None], {"a": {"b": [1]}}]
    await broker.subscribe("json")
    for value in values:
        await broker.publish("json", value)
    delivered = await recorder.wait_pubs("json", len(values))
    assert [p.data for p in delivered] == values
    pubs, _ = await broker.history("json", None, 100)
    assert [p.data for p in pubs] == values


async def test_raw_text_travels_with_the_publication(broker: Broker, recorder: Recorder) -> None:
    await broker.subscribe("raw")
    await broker.publish("raw", {"a": 1}, raw='{ "a" : 1 }')
    [delivered] = await recorder.wait_for("raw", 1)
    assert isinstance(delivered, Publication)
    assert delivered.raw_text == '{ "a" : 1 }'
    [stored], _ = await broker.history("raw", None, 1)
    assert stored.raw_text == '{ "a" : 1 }'


async def test_a_burst_of_concurrent_calls_all_succeed(broker: Broker) -> None:
    # More concurrent calls than a broker has connections: they wait their turn, none
    # fails (Redis: the pool once raised "Too many connections" past 100).
    positions = await asyncio.gather(*(broker.publish("burst", n) for n in range(300)))
    assert sorted(p.offset for p in positions) == list(range(1, 301))
    reads = await asyncio.gather(
        *(broker.history("burst", None, 1) for _ in range(150)),
        *(broker.add_presence("burst", f"c{n}", {}) for n in range(150)),
    )
    assert all(read[0][0].offset == 300 for read in reads[:150])  # type: ignore[index]
    assert len(await broker.presence("burst")) == 150


async def test_concurrent_publishes_are_delivered_in_offset_order(
    broker: Broker, recorder: Recorder
) -> None:
    await broker.subscribe("race")
    await asyncio.gather(*(broker.publish("race", n) for n in range(50)))
    assert offsets(await recorder.wait_for("race", 50)) == list(range(1, 51))


async def test_a_channel_not_subscribed_is_not_delivered(
    broker: Broker, recorder: Recorder
) -> None:
    await broker.subscribe("wanted")
    await broker.publish("unwanted", "no")
    await broker.publish_event(Join("unwanted", "c1", {}))
    await broker.publish("wanted", "yes")
    await recorder.wait_for("wanted", 1)
    await asyncio.sleep(0.1)
    assert recorder.on("unwanted") == []


async def test_unsubscribe_stops_only_that_channel(broker: Broker, recorder: Recorder) -> None:
    for channel in ("keep", "drop"):
        await broker.subscribe(channel)
    await broker.publish("drop", "before")
    await recorder.wait_for("drop", 1)
    await broker.unsubscribe("drop")
    # Published right after unsubscribe() returned: never delivered.
    for n in range(5):
        await broker.publish("drop", n)
        await broker.publish("keep", n)
    delivered = await recorder.wait_pubs("keep", 5)
    assert [p.data for p in delivered] == list(range(5))
    await asyncio.sleep(0.2)
    assert [p.data for p in recorder.publications("drop")] == ["before"]
    assert len(recorder.on("keep")) == 5


async def test_subscribe_affects_only_that_channel(broker: Broker, recorder: Recorder) -> None:
    await broker.subscribe("one")
    await broker.publish("one", 1)
    await recorder.wait_for("one", 1)
    await broker.subscribe("two")
    await broker.publish("one", 2)
    await broker.publish("two", 1)
    assert offsets(await recorder.wait_for("one", 2)) == [1, 2]
    assert offsets(await recorder.wait_for("two", 1)) == [1]


async def test_resubscribing_delivers_again(broker: Broker, recorder: Recorder) -> None:
    await broker.subscribe("again")
    await broker.unsubscribe("again")
    await broker.publish("again", "missed")
    await broker.subscribe("again")
    await broker.publish("again", "seen")
    [delivered] = await recorder.wait_for("again", 1)
    await asyncio.sleep(0.1)
    assert recorder.on("again") == [delivered]
    assert isinstance(delivered, Publication)
    assert (delivered.offset, delivered.data) == (2, "seen")


async def test_delivered_once_subscribe_returns(broker: Broker, recorder: Recorder) -> None:
    # "subscribe returns only once every publication accepted after it returned will be
    # delivered": no settling time between the two.
    for n in range(10):
        channel = f"prompt-{n}"
        await broker.subscribe(channel)
        await broker.publish(channel, n)
    for n in range(10):
        assert offsets(await recorder.wait_for(f"prompt-{n}", 1)) == [1]


async def test_join_and_leave_are_delivered_in_order_and_not_kept(
    broker: Broker, recorder: Recorder
) -> None:
    await broker.subscribe("room")
    await broker.publish_event(Join("room", "alice", {"name": "Alice"}))
    await broker.publish("room", "hi")
    await broker.publish_event(Leave("room", "alice"))
    delivered = await recorder.wait_for("room", 3)
    assert delivered[0] == Join("room", "alice", {"name": "Alice"})
    assert isinstance(delivered[1], Publication) and delivered[1].data == "hi"
    assert delivered[2] == Leave("room", "alice")
    # Join and leave carry no offset and do not enter history.
    pubs, position = await broker.history("room", None, 10)
    assert offsets(pubs) == [1]
    assert position.offset == 1


async def test_publish_event_refuses_publications(broker: Broker) -> None:
    with pytest.raises(TypeError):
        await broker.publish_event(Publication("room", 1, "e", "data"))


# -- history


async def test_history_returns_the_newest_n_in_order(broker: Broker) -> None:
    epoch = (await broker.publish("h", 1)).epoch
    for n in range(2, 11):
        await broker.publish("h", n)
    pubs, position = await broker.history("h", None, 3)
    assert [(p.offset, p.data, p.epoch, p.channel) for p in pubs] == [
        (8, 8, epoch, "h"),
        (9, 9, epoch, "h"),
        (10, 10, epoch, "h"),
    ]
    assert position == StreamPosition(10, epoch)
    everything, _ = await broker.history("h", None, 100)
    assert offsets(everything) == list(range(1, 11))


async def test_history_since_an_offset_returns_the_oldest_after_it(broker: Broker) -> None:
    for n in range(1, 11):
        await broker.publish("h", n)
    pubs, position = await broker.history("h", 4, 3)
    assert offsets(pubs) == [5, 6, 7]
    assert [p.data for p in pubs] == [5, 6, 7]
    assert position.offset == 10
    assert offsets((await broker.history("h", 4, 100))[0]) == list(range(5, 11))
    assert offsets((await broker.history("h", 0, 100))[0]) == list(range(1, 11))
    assert (await broker.history("h", 10, 100))[0] == []
    assert (await broker.history("h", 25, 100))[0] == []


async def test_history_keeps_the_client_and_timestamp(broker: Broker) -> None:
    before_ms = time.time_ns() // 1_000_000
    await broker.publish("who", "x", client="c-42")
    await broker.publish("who", "y")
    pubs, _ = await broker.history("who", None, 10)
    assert [p.client for p in pubs] == ["c-42", None]
    assert all(before_ms - 1000 <= p.ts_ms <= before_ms + 60_000 for p in pubs)


async def test_history_matches_what_was_delivered(broker: Broker, recorder: Recorder) -> None:
    await broker.subscribe("same")
    for n in range(10):
        await broker.publish("same", {"n": n}, client=f"c{n}")
    delivered = await recorder.wait_for("same", 10)
    pubs, _ = await broker.history("same", 0, 100)
    assert pubs == delivered


async def test_history_is_bounded_by_history_size(start_broker: StartBroker) -> None:
    broker, _ = await start_broker(history_size=5)
    for n in range(1, 13):
        await broker.publish("bounded", n)
    pubs, position = await broker.history("bounded", None, 100)
    assert offsets(pubs) == [8, 9, 10, 11, 12]
    assert position.offset == 12
    # Since an offset that history no longer holds: what is left, from the oldest kept.
    assert offsets((await broker.history("bounded", 2, 100))[0]) == [8, 9, 10, 11, 12]
    assert offsets((await broker.history("bounded", 9, 2))[0]) == [10, 11]


@pytest.mark.parametrize("begun_by", ["publish", "read"])
async def test_a_new_epochs_start_is_kept_apart_from_history(
    start_broker: StartBroker, begun_by: str
) -> None:
    """Redis lost the channel: the publishers' backlog lands at once, and the clients of
    the lost epoch, back a moment later, are given the new one whole, from its start
    kept apart and history; history itself keeps ``history_size``."""
    broker, _ = await start_broker(history_size=3, epoch_start_kept=6)
    if begun_by == "read":  # an instance looked first: the epoch begins with that read
        await broker.position("young")
    for n in range(1, 7):
        last = await broker.publish("young", n)
    assert offsets((await broker.history("young", 0, 100))[0]) == [4, 5, 6]
    assert offsets((await broker.history("young", None, 100))[0]) == [4, 5, 6]
    # History no longer holds 1 to 3: they are kept apart.
    assert offsets(await broker.epoch_start("young", last.epoch, 0, 100)) == [1, 2, 3]
    assert offsets(await broker.epoch_start("young", last.epoch, 1, 1)) == [2]
    assert await broker.epoch_start("young", "another", 0, 100) == []
    await broker.publish("young", 7)  # past epoch_start_kept: history only
    assert offsets((await broker.history("young", 0, 100))[0]) == [5, 6, 7]
    assert await broker.epoch_start("young", last.epoch, 0, 100) == []


async def test_a_new_epochs_start_is_kept_while_the_epoch_is_new(
    start_broker: StartBroker,
) -> None:
    broker, _ = await start_broker(history_size=3, epoch_start_kept_s=0.5)
    for n in range(1, 6):
        last = await broker.publish("aging", n)
    assert offsets(await broker.epoch_start("aging", last.epoch, 0, 100)) == [1, 2]
    await asyncio.sleep(0.6)
    assert await broker.epoch_start("aging", last.epoch, 0, 100) == []
    await broker.publish("aging", 6)
    assert await broker.epoch_start("aging", last.epoch, 0, 100) == []


async def test_a_new_epochs_start_is_not_kept_without_history(start_broker: StartBroker) -> None:
    broker, _ = await start_broker(history_size=0)
    last = await broker.publish("bare", 1)
    assert await broker.epoch_start("bare", last.epoch, 0, 100) == []


async def test_history_size_zero_keeps_nothing_but_offsets(start_broker: StartBroker) -> None:
    broker, recorder = await start_broker(history_size=0)
    await broker.subscribe("none")
    for n in range(3):
        await broker.publish("none", n)
    assert offsets(await recorder.wait_for("none", 3)) == [1, 2, 3]
    pubs, position = await broker.history("none", None, 10)
    assert pubs == []
    assert position.offset == 3


async def test_history_of_a_channel_never_published(broker: Broker) -> None:
    pubs, position = await broker.history("empty", None, 10)
    assert pubs == []
    assert position.offset == 0 and position.epoch
    assert await broker.history("empty", 0, 10) == ([], position)


async def test_history_expires_after_history_ttl_but_offsets_go_on(
    start_broker: StartBroker,
) -> None:
    broker, _ = await start_broker(history_ttl_s=1)
    first = await broker.publish("ttl", 1)
    await broker.publish("ttl", 2)
    await asyncio.sleep(1.3)
    pubs, position = await broker.history("ttl", None, 10)
    assert pubs == []
    # The epoch outlives the history (meta_ttl_s): offsets continue, so a client holding
    # offset 2 learns it cannot recover rather than being handed an unrelated offset 1.
    assert position == StreamPosition(2, first.epoch)
    assert await broker.publish("ttl", 3) == StreamPosition(3, first.epoch)
    assert offsets((await broker.history("ttl", None, 10))[0]) == [3]


async def test_history_of_another_epoch_reads_the_channels_own_from_its_start(
    start_broker: StartBroker,
) -> None:
    broker, _ = await start_broker(history_size=3)
    for n in range(1, 5):
        last = await broker.publish("epochs", n)
    pubs, position = await broker.history("epochs", 2, 10, epoch=last.epoch)
    assert (offsets(pubs), position) == ([3, 4], last)
    # A client of another epoch: the oldest history holds of this one (1 was trimmed).
    pubs, position = await broker.history("epochs", 2, 10, epoch="gone")
    assert (offsets(pubs), position) == ([2, 3, 4], last)
    pubs, _ = await broker.history("epochs", 40, 2, epoch="gone")
    assert offsets(pubs) == [2, 3]


# -- epochs that replaced others


async def test_a_recorded_successor_is_read_back_per_channel_and_epoch(broker: Broker) -> None:
    assert await broker.successor("replaced", "e1") is None
    await broker.supersede("replaced", "e1", "e2")
    assert await broker.successor("replaced", "e1") == "e2"
    assert await broker.successor("replaced", "e2") is None
    assert await broker.successor("other", "e1") is None
    await broker.supersede("replaced", "e2", "e3")  # one more loss: both are kept
    assert await broker.successor("replaced", "e1") == "e2"
    assert await broker.successor("replaced", "e2") == "e3"
    await broker.supersede("replaced", "e1", "e4")  # a later record replaces the first
    assert await broker.successor("replaced", "e1") == "e4"


async def test_a_successor_is_forgotten_after_the_history_ttl(start_broker: StartBroker) -> None:
    broker, _ = await start_broker(history_ttl_s=1)
    await broker.supersede("replaced", "e1", "e2")
    await asyncio.sleep(1.3)
    assert await broker.successor("replaced", "e1") is None


async def test_reading_a_successor_creates_nothing(broker: Broker) -> None:
    assert await broker.successor("untouched", "e1") is None
    assert await broker.peek_position("untouched") is None
    # Nor does recording one give the channel an epoch: that is publish's and position's.
    await broker.supersede("untouched", "e1", "e2")
    assert await broker.peek_position("untouched") is None


# -- idempotency


async def test_a_retried_publish_with_the_same_key_is_not_published_twice(
    broker: Broker, recorder: Recorder
) -> None:
    await broker.subscribe("idem")
    first = await broker.publish("idem", "once", idempotency_key="k1")
    again = await broker.publish("idem", "once", idempotency_key="k1")
    other = await broker.publish("idem", "twice", idempotency_key="k2")
    plain = await broker.publish("idem", "plain")
    assert again == first
    assert [first.offset, other.offset, plain.offset] == [1, 2, 3]
    assert [p.data for p in await recorder.wait_pubs("idem", 3)] == ["once", "twice", "plain"]
    await asyncio.sleep(0.1)
    assert len(recorder.on("idem")) == 3
    pubs, _ = await broker.history("idem", None, 10)
    assert [p.data for p in pubs] == ["once", "twice", "plain"]


async def test_idempotency_keys_are_per_channel(broker: Broker) -> None:
    await broker.publish("x", 0)
    a = await broker.publish("x", 1, idempotency_key="same")
    b = await broker.publish("y", 1, idempotency_key="same")
    assert (a.offset, b.offset) == (2, 1)


async def test_an_idempotency_key_is_forgotten_after_its_ttl(start_broker: StartBroker) -> None:
    broker, _ = await start_broker(idempotency_ttl_s=1)
    first = await broker.publish("forget", "a", idempotency_key="k")
    await asyncio.sleep(1.6)
    second = await broker.publish("forget", "a", idempotency_key="k")
    assert (first.offset, second.offset) == (1, 2)


# -- presence


async def test_presence_lists_added_clients_with_their_info(broker: Broker) -> None:
    assert await broker.presence("lobby") == {}
    await broker.add_presence("lobby", "c1", {"name": "Ann"})
    await broker.add_presence("lobby", "c2", {})
    await broker.add_presence("other", "c3", None)
    assert await broker.presence("lobby") == {"c1": {"name": "Ann"}, "c2": {}}
    assert await broker.presence("other") == {"c3": None}


async def test_presence_is_updated_by_a_second_add(broker: Broker) -> None:
    await broker.add_presence("lobby", "c1", {"v": 1})
    await broker.add_presence("lobby", "c1", {"v": 2})
    assert await broker.presence("lobby") == {"c1": {"v": 2}}


async def test_remove_presence_removes_only_that_client_on_that_channel(broker: Broker) -> None:
    await broker.add_presence("lobby", "c1", {})
    await broker.add_presence("lobby", "c2", {})
    await broker.add_presence("hall", "c1", {})
    await broker.remove_presence("lobby", "c1")
    assert await broker.presence("lobby") == {"c2": {}}
    assert await broker.presence("hall") == {"c1": {}}
    await broker.remove_presence("lobby", "c2")
    await broker.remove_presence("lobby", "never-there")
    assert await broker.presence("lobby") == {}


async def test_presence_does_not_depend_on_subscriptions_or_publishes(
    broker: Broker, recorder: Recorder
) -> None:
    await broker.add_presence("quiet", "c1", {"x": 1})
    await broker.subscribe("quiet")
    await broker.unsubscribe("quiet")
    assert await broker.presence("quiet") == {"c1": {"x": 1}}
    assert recorder.on("quiet") == []
    assert (await broker.position("quiet")).offset == 0


# -- instances: the status each heartbeat carries


def _status(instance_id: str, **figures: Any) -> InstanceStatus:
    return InstanceStatus(
        id=instance_id, address="http://127.0.0.1:1", pid=1, version="9", **figures
    )


async def _wait_listed(broker: Broker, want: InstanceStatus) -> list[InstanceStatus]:
    """``broker.instances()`` once it lists ``want`` (its heartbeat may take a moment)."""
    deadline = time.monotonic() + 5
    while True:
        listed = await broker.instances()
        if want in listed:
            return listed
        assert time.monotonic() < deadline, f"{want} never listed: {listed}"
        await asyncio.sleep(0.02)


async def test_instances_list_this_instance_as_its_status_source_tells(
    start_broker: StartBroker,
) -> None:
    broker, _ = await start_broker(instance_id="me", heartbeat_interval_s=0.1)
    figures = {"connections": 3, "subscriptions": 5, "channels": 2, "uptime": 1.5}
    broker.set_status(lambda: _status("me", **figures))
    assert await _wait_listed(broker, _status("me", **figures)) == [_status("me", **figures)]
    # Each heartbeat reads the source again.
    figures["connections"] = 4
    await _wait_listed(broker, _status("me", **figures))


async def test_an_instance_without_a_status_source_is_not_listed(
    start_broker: StartBroker,
) -> None:
    broker, _ = await start_broker(instance_id="mute", heartbeat_interval_s=0.1)
    await asyncio.sleep(0.3)
    assert [status.id for status in await broker.instances()] == []


async def test_a_closed_instance_is_no_longer_listed(start_broker: StartBroker) -> None:
    closing, _ = await start_broker(instance_id="closing", heartbeat_interval_s=0.1)
    staying, _ = await start_broker(instance_id="staying", heartbeat_interval_s=0.1)
    closing.set_status(lambda: _status("closing"))
    staying.set_status(lambda: _status("staying"))
    await _wait_listed(closing, _status("closing"))
    await _wait_listed(staying, _status("staying"))
    await closing.close()
    # At once, not after the expiry (memory: each broker lists only itself anyway).
    assert "closing" not in {status.id for status in await staying.instances()}


# -- Redis only: several processes, and a broker that goes away


@pytest.fixture
async def redis_brokers(redis_url: str) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    made: list[Broker] = []

    async def make(**options: Any) -> tuple[Broker, Recorder]:
        options.setdefault("instance_id", f"contract-{secrets.token_hex(4)}")
        broker = create_broker(redis_url, BrokerOptions(**options))
        recorder = Recorder()
        await broker.start(recorder)
        made.append(broker)
        return broker, recorder

    yield make
    for broker in made:
        await broker.close()


async def test_redis_instances_share_offsets_delivery_history_and_presence(
    redis_brokers: Callable[..., Awaitable[Any]],
) -> None:
    (one, rec_one), (two, rec_two) = await redis_brokers(), await redis_brokers()
    for broker in (one, two):
        await broker.subscribe("shared")
    positions = [await (one if n % 2 else two).publish("shared", n) for n in range(10)]
    assert [p.offset for p in positions] == list(range(1, 11))
    assert len({p.epoch for p in positions}) == 1
    await one.publish_event(Join("shared", "c1", {"on": "one"}))
    assert (await rec_one.wait_for("shared", 11)) == (await rec_two.wait_for("shared", 11))
    assert (await one.history("shared", None, 10)) == (await two.history("shared", None, 10))
    await one.add_presence("shared", "c1", {"on": "one"})
    await two.add_presence("shared", "c2", {"on": "two"})
    expected = {"c1": {"on": "one"}, "c2": {"on": "two"}}
    assert await one.presence("shared") == expected
    assert await two.presence("shared") == expected


async def test_redis_presence_of_a_closed_instance_is_gone(
    redis_brokers: Callable[..., Awaitable[Any]],
) -> None:
    (one, _), (two, _) = await redis_brokers(), await redis_brokers()
    await one.add_presence("lobby", "c1", {})
    await two.add_presence("lobby", "c2", {})
    await one.close()
    assert await two.presence("lobby") == {"c2": {}}


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[Any]:
    """A plain client, to play an instance that is not this process."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _fake_instance(raw_redis: Any, instance: str, heard_s_ago: float, *clients: str) -> None:
    """Presence entries of ``instance`` on "lobby", which last heartbeat ``heard_s_ago``."""
    from sanic_feeds.brokers.redis import channel_keys

    heard_ms = time.time_ns() // 1_000_000 - int(heard_s_ago * 1000)
    await raw_redis.zadd("feeds:instances", {instance: heard_ms})
    for client in clients:
        entry = orjson.dumps([instance, {"on": instance}])
        await raw_redis.hset(channel_keys("lobby").presence, client, entry)


async def test_redis_presence_of_a_silent_instance_expires(
    redis_brokers: Callable[..., Awaitable[Any]], raw_redis: Any
) -> None:
    """An instance that stops heartbeating (it crashed) is no longer listed within five
    heartbeat intervals; nobody ever removed its entries."""
    (alive, _) = await redis_brokers(heartbeat_interval_s=0.2)
    await alive.add_presence("lobby", "alive-client", {})
    await _fake_instance(raw_redis, "crashed", 0, "ghost")
    assert await alive.presence("lobby") == {"alive-client": {}, "ghost": {"on": "crashed"}}
    started = time.monotonic()
    while "ghost" in await alive.presence("lobby"):
        assert time.monotonic() - started < 3, "a dead instance's entry never expired"
        await asyncio.sleep(0.05)
    assert time.monotonic() - started > 0.5
    assert await alive.presence("lobby") == {"alive-client": {}}


async def test_redis_presence_of_an_instance_silent_for_a_while_comes_back(
    redis_brokers: Callable[..., Awaitable[Any]], raw_redis: Any
) -> None:
    """Silent for longer than the expiry (stopped, overloaded, cut off from Redis), then
    heartbeating again with its clients still connected: listed again. (Its entries were
    once deleted by the first read in between, for good.)"""
    (reader, _) = await redis_brokers(heartbeat_interval_s=0.2)
    await _fake_instance(raw_redis, "paused", 2.0, "sleeper")
    assert await reader.presence("lobby") == {}
    await _fake_instance(raw_redis, "paused", 0)
    assert await reader.presence("lobby") == {"sleeper": {"on": "paused"}}


async def test_redis_presence_entries_of_an_instance_gone_for_long_are_deleted(
    redis_brokers: Callable[..., Awaitable[Any]], raw_redis: Any
) -> None:
    from sanic_feeds.brokers.redis import channel_keys

    (reader, _) = await redis_brokers(heartbeat_interval_s=0.2)
    await _fake_instance(raw_redis, "long-gone", 61.0, "old")
    await raw_redis.hset(channel_keys("lobby").presence, "orphan", b'["never-heard", {}]')
    await _fake_instance(raw_redis, "silent", 2.0, "quiet")
    assert await reader.presence("lobby") == {}
    # Deleted: an instance silent past the grace, and one never heard of (it closed).
    # Kept: one silent for a little while, which may yet come back.
    assert set(await raw_redis.hkeys(channel_keys("lobby").presence)) == {b"quiet"}


async def test_redis_instances_list_each_other_sorted_by_address(
    redis_brokers: Callable[..., Awaitable[Any]],
) -> None:
    (one, _), (two, _) = (
        await redis_brokers(instance_id="b-one"),
        await redis_brokers(instance_id="a-two"),
    )
    one.set_status(lambda: dataclasses.replace(_status("b-one"), address="http://h:2"))
    two.set_status(lambda: dataclasses.replace(_status("a-two"), address="http://h:1"))
    first = dataclasses.replace(_status("a-two"), address="http://h:1")
    second = dataclasses.replace(_status("b-one"), address="http://h:2")
    await _wait_listed(one, first)
    await _wait_listed(one, second)
    assert await one.instances() == await two.instances() == [first, second]


async def _fake_status(raw_redis: Any, status: InstanceStatus, heard_s_ago: float) -> None:
    """What the heartbeat of an instance that is not this process left in Redis."""
    from sanic_feeds.brokers.envelope import encode_status

    heard_ms = time.time_ns() // 1_000_000 - int(heard_s_ago * 1000)
    await raw_redis.zadd("feeds:instances", {status.id: heard_ms})
    await raw_redis.set(f"feeds:status:{status.id}", encode_status(status), px=60_000)


async def test_redis_a_silent_instance_is_not_listed_after_the_expiry(
    redis_brokers: Callable[..., Awaitable[Any]], raw_redis: Any
) -> None:
    """An instance that stops heartbeating (it crashed) drops out within five heartbeat
    intervals, though nobody removed what it left in Redis."""
    (reader, _) = await redis_brokers(heartbeat_interval_s=0.2)
    await _fake_status(raw_redis, _status("crashed"), 0)
    assert await reader.instances() == [_status("crashed")]
    started = time.monotonic()
    while await reader.instances():
        assert time.monotonic() - started < 3, "a silent instance was listed for ever"
        await asyncio.sleep(0.05)
    assert time.monotonic() - started > 0.5


async def test_redis_a_heartbeat_status_expires_with_the_instance(
    redis_brokers: Callable[..., Awaitable[Any]], raw_redis: Any
) -> None:
    (broker, _) = await redis_brokers(instance_id="ttl", heartbeat_interval_s=0.2)
    broker.set_status(lambda: _status("ttl"))
    await _wait_listed(broker, _status("ttl"))
    # Five heartbeat intervals: what a crashed instance leaves goes by itself.
    assert 0 < await raw_redis.pttl("feeds:status:ttl") <= 1000


async def test_redis_a_status_this_version_cannot_read_is_skipped(
    redis_brokers: Callable[..., Awaitable[Any]], raw_redis: Any
) -> None:
    (reader, _) = await redis_brokers(heartbeat_interval_s=0.2)
    await _fake_status(raw_redis, _status("good"), 0)
    await raw_redis.zadd("feeds:instances", {"garbled": time.time_ns() // 1_000_000})
    await raw_redis.set("feeds:status:garbled", b"not json")
    assert await reader.instances() == [_status("good")]


async def _position_once_back(broker: Broker, channel: str) -> StreamPosition:
    """``channel``'s position, read as soon as the restarted Redis answers (15 s at most)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return await broker.position(channel)
        except BrokerUnavailable:
            assert time.monotonic() < deadline, "Redis never came back"
            await asyncio.sleep(0.1)


async def test_redis_an_epoch_created_by_a_read_changes_when_redis_loses_its_data(
    private_redis: RedisServer,
) -> None:
    broker = create_broker(private_redis.url, BrokerOptions(instance_id="volatile"))
    await broker.start(Recorder())
    try:
        before = await broker.position("c")
        assert before.epoch
        private_redis.restart()  # no persistence: every key is gone
        after = await _position_once_back(broker, "c")
        assert after.offset == 0
        assert after.epoch and after.epoch != before.epoch
        assert await broker.publish("c", 1) == StreamPosition(1, after.epoch)
    finally:
        await broker.close()


async def test_redis_a_successor_recorded_after_a_restart_is_kept_by_publishes(
    private_redis: RedisServer,
) -> None:
    """What the hub does after Redis lost its data: it records old -> new once it sees
    the new epoch; the record lives beside the new epoch's keys, which publishes and
    reads of the new epoch leave alone."""
    broker = create_broker(private_redis.url, BrokerOptions(instance_id="volatile"))
    await broker.start(Recorder())
    try:
        before = await broker.publish("c", 1)
        private_redis.restart()  # no persistence: every key is gone
        after = await _position_once_back(broker, "c")
        assert await broker.successor("c", before.epoch) is None  # lost with the rest
        await broker.supersede("c", before.epoch, after.epoch)
        await broker.publish("c", 1)
        await broker.history("c", 0, 10)
        assert await broker.successor("c", before.epoch) == after.epoch
    finally:
        await broker.close()


async def test_redis_a_read_that_creates_the_epoch_drops_a_stale_history(
    redis_url: str, raw_redis: Any
) -> None:
    """The meta hash gone but the stream left (evicted, deleted by hand): the new epoch
    starts an empty history, as a publish that finds no meta does."""
    from sanic_feeds.brokers.redis import channel_keys

    broker = create_broker(redis_url, BrokerOptions(instance_id="stale"))
    await broker.start(Recorder())
    try:
        old = [await broker.publish("stale", n) for n in range(3)]
        await raw_redis.delete(channel_keys("stale").meta)
        renewed = await broker.position("stale")
        assert renewed.offset == 0 and renewed.epoch != old[0].epoch
        assert (await broker.history("stale", None, 10))[0] == []
        assert await broker.publish("stale", "new") == StreamPosition(1, renewed.epoch)
        pubs, _ = await broker.history("stale", None, 10)
        assert [(p.offset, p.epoch, p.data) for p in pubs] == [(1, renewed.epoch, "new")]
        meta_ttl_s = await raw_redis.ttl(channel_keys("stale").meta)
        assert 0 < meta_ttl_s <= BrokerOptions().meta_ttl_s
    finally:
        await broker.close()


async def test_redis_an_epoch_created_by_a_read_gets_the_meta_ttl(
    redis_url: str, raw_redis: Any
) -> None:
    from sanic_feeds.brokers.redis import channel_keys

    broker = create_broker(redis_url, BrokerOptions(instance_id="ttl", meta_ttl_s=1000))
    await broker.start(Recorder())
    try:
        await broker.position("fresh")
        assert 990 < await raw_redis.ttl(channel_keys("fresh").meta) <= 1000
        await broker.history("other", None, 1)
        assert 990 < await raw_redis.ttl(channel_keys("other").meta) <= 1000
    finally:
        await broker.close()


async def test_redis_unreachable_at_start_raises_broker_unavailable() -> None:
    broker = create_broker(f"redis://127.0.0.1:{free_port()}/0", BrokerOptions(instance_id="x"))
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await broker.start(Recorder())
    assert time.monotonic() - started < 10
    await broker.close()


async def test_redis_calls_raise_broker_unavailable_when_redis_is_gone(
    private_redis: RedisServer,
) -> None:
    broker = create_broker(private_redis.url, BrokerOptions(instance_id="gone"))
    await broker.start(Recorder())
    try:
        await broker.publish("c", 1)
        private_redis.kill()
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: broker.publish("c", 2),
            lambda: broker.publish_event(Join("c", "x", {})),
            lambda: broker.position("c"),
            lambda: broker.history("c", None, 10),
            lambda: broker.add_presence("c", "x", {}),
            lambda: broker.remove_presence("c", "x"),
            lambda: broker.presence("c"),
            lambda: broker.subscribe("c"),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                await call()
            assert time.monotonic() - started < 10
        await asyncio.sleep(0.1)
        # unsubscribe never raises for a broker that went away.
        await broker.unsubscribe("c")
    finally:
        await broker.close()


async def test_redis_reconnects_and_tells_the_handler_to_heal(
    private_redis_aof: RedisServer,
) -> None:
    broker = create_broker(
        private_redis_aof.url, BrokerOptions(instance_id="heal", heartbeat_interval_s=0.2)
    )
    recorder = Recorder()
    await broker.start(recorder)
    try:
        await broker.subscribe("c")
        await broker.publish("c", 1)
        await recorder.wait_for("c", 1)
        private_redis_aof.restart()
        deadline = time.monotonic() + 15
        while not (recorder.resubscribed and broker.ready):
            assert time.monotonic() < deadline, "never resubscribed"
            await asyncio.sleep(0.05)
        # The channel is subscribed again, and history outlived the restart (AOF).
        position = await broker.publish("c", 2)
        assert position.offset == 2
        assert offsets(await recorder.wait_for("c", 2)) == [1, 2]
    finally:
        await broker.close()


async def test_nothing_is_delivered_after_unsubscribe_returns(
    broker: Broker, recorder: Recorder
) -> None:
    await broker.subscribe("burst")
    await asyncio.gather(*(broker.publish("burst", n) for n in range(200)))
    await broker.unsubscribe("burst")
    seen = len(recorder.on("burst"))
    await asyncio.sleep(0.3)
    assert len(recorder.on("burst")) == seen


class _SwallowingPipeline:
    """A pipeline whose reply never comes and whose cancellation comes out as a timeout,
    as redis-py's own timeouts can turn a cancel that races them into (Python 3.11)."""

    async def __aenter__(self) -> _SwallowingPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, command: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None

    async def execute(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise TimeoutError("Timeout reading from socket") from None


async def test_redis_close_ends_when_a_cancelled_heartbeat_swallows_its_cancellation(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A teardown once hung in CI for the 120 s of the test timeout, in ``close()``: the
    heartbeat rides over Redis errors, so a cancellation that reaches it as a timeout let
    it beat on, and ``close()`` awaited it forever. Now the loop stops once closing, and
    every step of ``close()`` has a bound of its own."""
    broker = create_broker(redis_url, BrokerOptions(instance_id="stuck", heartbeat_interval_s=0.05))
    await broker.start(Recorder())
    client = broker._redis  # type: ignore[attr-defined]
    monkeypatch.setattr(client, "pipeline", lambda **kwargs: _SwallowingPipeline())
    await asyncio.sleep(0.2)  # the next heartbeat now waits in execute()
    heartbeat = broker._heartbeat_task  # type: ignore[attr-defined]
    began = time.monotonic()
    await asyncio.wait_for(broker.close(), 30)
    assert time.monotonic() - began < 3
    await asyncio.sleep(0.2)
    assert heartbeat.done(), "the heartbeat goes on beating after close()"


class _SlowRecorder(Recorder):
    """A handler that costs ``cost_s`` of blocked event loop per publication, as fan-out to
    many local subscribers does on an instance whose cores are saturated."""

    def __init__(self, cost_s: float) -> None:
        super().__init__()
        self._cost_s = cost_s

    def on_event(self, event: Event) -> None:
        super().on_event(event)
        if isinstance(event, Publication):
            time.sleep(self._cost_s)


@pytest.mark.parametrize("kind", ["redis", "cluster"])
async def test_redis_a_reader_that_runs_behind_is_not_taken_for_deaf(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Under overload a backlog waits in the pub/sub socket (and in Redis' output buffer for
    it), the instance's own heartbeat behind it, for longer than the deafness check allows
    (5 intervals). The connection is slow, not deaf: messages keep arriving on it. Dropping
    it throws the backlog away, a gap of seconds of messages, more than history holds at
    high rates (the hub then closes the channel's clients with 1013). Another instance
    publishes, from a thread of its own, so that the backlog builds in the socket as it does
    in production; payloads of 2 KB make it larger than what the reader buffers, so that
    the event loop (and the check) runs between its chunks."""
    url: str = request.getfixturevalue("redis_cluster_url" if kind == "cluster" else "redis_url")
    # About 2 s of backlog at 1 ms per message; deaf after 5 x 0.05 s of silence.
    total, cost_s, interval_s = 2000, 0.001, 0.05
    recorder = _SlowRecorder(cost_s)
    broker = create_broker(url, BrokerOptions(instance_id="slow", heartbeat_interval_s=interval_s))
    await broker.start(recorder)

    async def publish_all() -> None:
        publisher = create_broker(url, BrokerOptions(instance_id="publisher"))
        await publisher.start(Recorder())
        try:
            payload = "x" * 2000
            await asyncio.gather(*(publisher.publish("slow", [n, payload]) for n in range(total)))
        finally:
            await publisher.close()

    try:
        await broker.subscribe("slow")
        await asyncio.to_thread(asyncio.run, publish_all())
        deadline = time.monotonic() + 60
        while len(recorder.publications("slow")) < total:
            if recorder.resubscribed or recorder.channels_resubscribed:
                break  # dropped and resubscribed: what was in the socket is gone
            assert time.monotonic() < deadline, "the backlog never arrived"
            await asyncio.sleep(0.05)
        delivered = len(recorder.publications("slow"))
        assert (recorder.resubscribed, recorder.channels_resubscribed, delivered) == (0, [], total)
        assert offsets(recorder.publications("slow")) == list(range(1, total + 1))
    finally:
        await broker.close()
