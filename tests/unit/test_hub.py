"""The hub with the memory broker and in-memory outboxes: no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sanic_feeds.brokers.base import BrokerOptions
from sanic_feeds.brokers.memory import MemoryBroker
from sanic_feeds.codec import WireFormat
from sanic_feeds.errors import BrokerUnavailable
from sanic_feeds.events import Join, Publication, StreamPosition
from sanic_feeds.server.hub import Hub
from sanic_feeds.server.outbox import Flusher, Outbox
from tests.support.fakes import FakeProtocol, FakeTransport, payloads


class Client:
    def __init__(self, hub: Hub, max_queue: int = 100) -> None:
        self.protocol = FakeProtocol()
        #: Why the hub gave it up (the close reason's start); None while it did not.
        self.aborted: str | None = None
        self.outbox = Outbox(self.protocol, hub.flusher, max_queue, self.abort)

    def abort(self, reason: str) -> None:
        self.aborted = reason

    def events(self) -> list[Any]:
        assert self.protocol.transport is not None
        return payloads(bytes(self.protocol.transport.written))


class CountingBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.subscribes: list[str] = []
        self.unsubscribes: list[str] = []
        self.fail_next_subscribe = False

    async def subscribe(self, channel: str) -> None:
        self.subscribes.append(channel)
        if self.fail_next_subscribe:
            self.fail_next_subscribe = False
            raise BrokerUnavailable("down")
        await super().subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.unsubscribes.append(channel)
        await super().unsubscribe(channel)


@pytest.fixture
async def setup() -> Any:
    broker = CountingBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()))
    await broker.start(hub)
    yield broker, hub
    await hub.close()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_first_subscriber_subscribes_and_last_unsubscribes(setup: Any) -> None:
    broker, hub = setup
    a, b = Client(hub), Client(hub)
    await hub.subscribe("news", a.outbox, WireFormat.JSON)
    await hub.subscribe("news", b.outbox, WireFormat.JSON)
    assert broker.subscribes == ["news"]
    await hub.unsubscribe("news", a.outbox)
    assert broker.unsubscribes == []
    await hub.unsubscribe("news", b.outbox)
    assert broker.unsubscribes == ["news"]
    assert hub.channel_count == 0


async def test_emptying_one_channel_leaves_the_others_subscribed(setup: Any) -> None:
    broker, hub = setup
    a, b = Client(hub), Client(hub)
    await hub.subscribe("one", a.outbox, WireFormat.JSON)
    await hub.subscribe("two", b.outbox, WireFormat.JSON)
    await hub.unsubscribe("one", a.outbox)
    assert broker.unsubscribes == ["one"]
    await broker.publish("two", "still here")
    await settle()
    assert [e["data"] for e in b.events()] == ["still here"]


async def test_a_failed_broker_subscribe_is_rolled_back(setup: Any) -> None:
    broker, hub = setup
    broker.fail_next_subscribe = True
    a = Client(hub)
    with pytest.raises(BrokerUnavailable):
        await hub.subscribe("news", a.outbox, WireFormat.JSON)
    assert hub.channel_count == 0
    await hub.subscribe("news", a.outbox, WireFormat.JSON)
    assert broker.subscribes == ["news", "news"]
    assert hub.local_subscribers("news") == 1


async def test_concurrent_joins_and_leaves_never_leave_a_member_without_subscription(
    setup: Any,
) -> None:
    broker, hub = setup
    clients = [Client(hub) for _ in range(50)]

    async def cycle(client: Client) -> None:
        for _ in range(20):
            await hub.subscribe("busy", client.outbox, WireFormat.JSON)
            await asyncio.sleep(0)
            await hub.unsubscribe("busy", client.outbox)

    await asyncio.gather(*(cycle(c) for c in clients))
    stayer = Client(hub)
    await hub.subscribe("busy", stayer.outbox, WireFormat.JSON)
    await broker.publish("busy", 1)
    await settle()
    assert [e["data"] for e in stayer.events()] == [1]
    assert len(broker.subscribes) == len(broker.unsubscribes) + 1


class GatedBroker(MemoryBroker):
    """A memory broker whose unsubscribe waits for ``gate``: Redis answering slowly."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.unsubscribing = asyncio.Event()

    async def unsubscribe(self, channel: str) -> None:
        self.unsubscribing.set()
        await self.gate.wait()
        await super().unsubscribe(channel)


async def test_defect4_a_join_while_the_last_leave_unsubscribes_ends_up_subscribed() -> None:
    """The pattern's destroy-versus-join race, made deterministic: the last subscriber's
    leave is inside the broker's unsubscribe when a new subscriber joins."""
    broker = GatedBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()))
    await broker.start(hub)
    leaver, joiner = Client(hub), Client(hub)
    await hub.subscribe("race", leaver.outbox, WireFormat.JSON)
    leaving = asyncio.create_task(hub.unsubscribe("race", leaver.outbox))
    await broker.unsubscribing.wait()
    joining = asyncio.create_task(hub.subscribe("race", joiner.outbox, WireFormat.JSON))
    await settle()
    broker.gate.set()
    await asyncio.gather(leaving, joining)
    await broker.publish("race", "after the race")
    await settle()
    assert [e["data"] for e in joiner.events()] == ["after the race"]
    assert hub.local_subscribers("race") == 1
    await hub.close()


class DeadTransport(FakeTransport):
    """A socket that died under the server: every write raises, as a reset one does."""

    def write(self, data: Any) -> None:
        raise ConnectionResetError("connection reset by peer")


async def test_defect5_sockets_dying_mid_fanout_do_not_end_the_channel(setup: Any) -> None:
    """The pattern awaited each client's send in turn, inside the receiver task: the first
    dead socket raised there and ended fan-out for the whole channel. Half the subscribers
    here have sockets that fail on write, interleaved with healthy ones."""
    broker, hub = setup
    clients = [Client(hub) for _ in range(20)]
    doomed = clients[::2]
    for client in doomed:
        client.protocol.transport = DeadTransport()
    for client in clients:
        await hub.subscribe("fragile", client.outbox, WireFormat.JSON)
    for n in range(5):
        await broker.publish("fragile", n)
        await settle()
    for client in clients[1::2]:
        assert [e["data"] for e in client.events()] == [0, 1, 2, 3, 4]
    assert all(client.outbox.closed for client in doomed)
    late = Client(hub)
    await hub.subscribe("fragile", late.outbox, WireFormat.JSON)
    await broker.publish("fragile", "late")
    await settle()
    assert [e["data"] for e in late.events()] == ["late"]


async def test_publications_are_encoded_once_per_format_and_reach_each_format(
    setup: Any,
) -> None:
    broker, hub = setup
    json_client, raw_client = Client(hub), Client(hub)
    await hub.subscribe("c", json_client.outbox, WireFormat.JSON)
    await hub.subscribe("c", raw_client.outbox, WireFormat.RAW)
    await broker.publish("c", {"n": 1})
    await settle()
    assert json_client.events()[0]["data"] == {"n": 1}
    assert raw_client.protocol.transport is not None
    assert bytes(raw_client.protocol.transport.written) == b"\x81\x07" + b'{"n":1}'


async def test_frames_of_one_loop_iteration_leave_in_one_write(setup: Any) -> None:
    broker, hub = setup
    client = Client(hub)
    writes: list[bytes] = []
    assert client.protocol.transport is not None
    client.protocol.transport.write = writes.append  # type: ignore[method-assign]
    await hub.subscribe("c", client.outbox, WireFormat.JSON)
    for n in range(10):
        await broker.publish("c", n)
    await settle()
    assert len(writes) == 1
    assert [e["data"] for e in payloads(writes[0])] == list(range(10))


async def test_a_client_that_does_not_drain_is_aborted_alone(setup: Any) -> None:
    broker, hub = setup
    slow, fast = Client(hub, max_queue=5), Client(hub, max_queue=5)
    assert slow.protocol.transport is not None
    slow.protocol.transport.buffered = 10**6  # the peer stopped reading
    await hub.subscribe("c", slow.outbox, WireFormat.JSON)
    await hub.subscribe("c", fast.outbox, WireFormat.JSON)
    for n in range(20):
        await broker.publish("c", n)
        await settle()
    assert slow.aborted == "too slow"
    assert not fast.aborted
    assert [e["data"] for e in fast.events()] == list(range(20))


async def test_a_gap_in_offsets_is_filled_from_history_in_order(setup: Any) -> None:
    broker, hub = setup
    client = Client(hub)
    await hub.subscribe("c", client.outbox, WireFormat.JSON)
    await broker.publish("c", 1)
    await settle()
    # Pub/sub skips offsets 2 and 3 (as after a reconnect); 4 arrives live.
    await broker.unsubscribe("c")
    await broker.publish("c", 2)
    await broker.publish("c", 3)
    await broker.subscribe("c")
    await broker.publish("c", 4)
    await settle()
    assert [e["offset"] for e in client.events()] == [1, 2, 3, 4]


class HistoryCountingBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.history_reads: list[str] = []

    async def history(self, channel: str, since: int | None, limit: int, **kw: Any) -> Any:
        self.history_reads.append(channel)
        return await super().history(channel, since, limit, **kw)


async def test_channels_resubscribed_heals_those_channels_without_a_live_publication() -> None:
    """A shard of a cluster lost "a" (its slot migrated) while "b" stayed subscribed:
    what "a" missed is delivered as soon as the broker says it is back, before any new
    publication shows the gap, and "b" is not read from history."""
    broker = HistoryCountingBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()))
    await broker.start(hub)
    a, b = Client(hub), Client(hub)
    await hub.subscribe("a", a.outbox, WireFormat.JSON)
    await hub.subscribe("b", b.outbox, WireFormat.JSON)
    await broker.publish("a", 1)
    await broker.publish("b", 1)
    await settle()
    broker.history_reads.clear()
    await broker.unsubscribe("a")
    await broker.publish("a", 2)
    await broker.publish("a", 3)
    await broker.subscribe("a")
    hub.on_channels_resubscribed(["a"])
    await settle()
    assert [e["offset"] for e in a.events()] == [1, 2, 3]
    assert [e["offset"] for e in b.events()] == [1]
    assert broker.history_reads == ["a"]
    await hub.close()


async def test_a_resubscribed_channel_nobody_here_subscribes_is_ignored(setup: Any) -> None:
    _, hub = setup
    hub.on_channels_resubscribed(["nobody"])
    await settle()
    assert hub.channel_count == 0


async def test_a_gap_that_history_no_longer_holds_aborts_the_channels_clients() -> None:
    broker = MemoryBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()), heal_max=300)
    await broker.start(hub)
    client = Client(hub)
    await hub.subscribe("c", client.outbox, WireFormat.JSON)
    await broker.publish("c", 0)
    await settle()
    await broker.unsubscribe("c")
    for n in range(150):  # history keeps 100
        await broker.publish("c", n)
    await broker.subscribe("c")
    await broker.publish("c", "live")
    await settle()
    assert client.aborted == "missed messages history no longer holds"
    await hub.close()


async def test_subscriber_is_greeted_with_the_position_before_any_publication(
    setup: Any,
) -> None:
    broker, hub = setup
    await broker.publish("c", "old")
    client = Client(hub)
    greeted: list[tuple[StreamPosition, bool]] = []
    position, recovered = await hub.subscribe(
        "c", client.outbox, WireFormat.JSON, lambda *args: greeted.append(args)
    )
    assert greeted == [(position, False)]
    assert (position.offset, recovered) == (1, False)
    await broker.publish("c", "new")
    await settle()
    assert [e["data"] for e in client.events()] == ["new"]


async def test_recovery_queues_exactly_the_missed_publications_before_live_ones(
    setup: Any,
) -> None:
    broker, hub = setup
    watcher = Client(hub)
    await hub.subscribe("c", watcher.outbox, WireFormat.JSON)
    for n in range(1, 11):
        await broker.publish("c", n)
    await settle()
    epoch = watcher.events()[0]["epoch"]
    returning = Client(hub)
    position, recovered = await hub.subscribe(
        "c", returning.outbox, WireFormat.JSON, since=StreamPosition(4, epoch)
    )
    assert (position.offset, recovered) == (10, True)
    await broker.publish("c", 11)
    await settle()
    assert [e["offset"] for e in returning.events()] == list(range(5, 12))


@pytest.mark.parametrize("watched", [False, True], ids=["channel closed", "channel kept open"])
async def test_a_subscriber_of_an_empty_channel_recovers_from_offset_0(
    setup: Any, watched: bool
) -> None:
    broker, hub = setup
    if watched:  # another subscriber keeps the channel open meanwhile
        await hub.subscribe("c", Client(hub).outbox, WireFormat.JSON)
    leaving = Client(hub)
    greeted, _ = await hub.subscribe("c", leaving.outbox, WireFormat.JSON)
    assert greeted.offset == 0 and greeted.epoch
    await hub.unsubscribe("c", leaving.outbox)
    for n in range(1, 6):
        assert await broker.publish("c", n) == StreamPosition(n, greeted.epoch)
    await settle()
    returning = Client(hub)
    position, recovered = await hub.subscribe("c", returning.outbox, WireFormat.JSON, since=greeted)
    assert (position, recovered) == (StreamPosition(5, greeted.epoch), True)
    await broker.publish("c", 6)
    await settle()
    assert [e["offset"] for e in returning.events()] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("since", "why"),
    [
        (StreamPosition(4, "another-epoch"), "epoch differs"),
        (StreamPosition(99, "EPOCH"), "offset from the future"),
        (StreamPosition(0, "EPOCH"), "more missed than recovery_max (5)"),
    ],
)
async def test_recovery_is_refused_rather_than_partial(since: StreamPosition, why: str) -> None:
    broker = MemoryBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()), heal_max=5)
    await broker.start(hub)
    watcher = Client(hub)
    await hub.subscribe("c", watcher.outbox, WireFormat.JSON)
    for n in range(1, 11):
        await broker.publish("c", n)
    await settle()
    epoch = watcher.events()[0]["epoch"]
    since = StreamPosition(since.offset, epoch if since.epoch == "EPOCH" else since.epoch)
    returning = Client(hub)
    position, recovered = await hub.subscribe("c", returning.outbox, WireFormat.JSON, since=since)
    assert recovered is False, why
    assert position.offset == 10
    await settle()
    assert returning.events() == []
    await hub.close()


async def test_join_and_leave_stop_above_the_announce_limit_but_messages_do_not() -> None:
    broker = MemoryBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()), announce_max=2)
    await broker.start(hub)
    clients = [Client(hub) for _ in range(3)]
    await hub.subscribe("c", clients[0].outbox, WireFormat.JSON)
    await hub.subscribe("c", clients[1].outbox, WireFormat.JSON)
    await broker.publish_event(Join("c", "two-members"))
    await settle()
    await hub.subscribe("c", clients[2].outbox, WireFormat.JSON)
    await broker.publish_event(Join("c", "three-members"))
    await broker.publish("c", "still delivered")
    await settle()
    assert [e["type"] for e in clients[0].events()] == ["join", "message"]
    assert [e["type"] for e in clients[2].events()] == ["message"]
    await hub.close()


def test_publication_raw_text_default() -> None:
    assert Publication("c", 1, "e", "x").raw_text == "x"


class SlowHistoryBroker(MemoryBroker):
    """A memory broker whose history reads take a while (a Redis round trip, made
    visible), counting them."""

    def __init__(self) -> None:
        super().__init__()
        self.history_reads = 0

    async def history(self, channel: str, since: int | None, limit: int, **kw: Any) -> Any:
        self.history_reads += 1
        await asyncio.sleep(0.02)
        return await super().history(channel, since, limit, **kw)


async def test_concurrent_recoveries_of_a_channel_share_one_history_read() -> None:
    """Clients moving to this instance at once (their own died) each recover what they
    missed; they used to queue behind one lock, one history read each."""
    broker = SlowHistoryBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()), heal_max=100)
    await broker.start(hub)
    holder = Client(hub)
    position, _ = await hub.subscribe("moved", holder.outbox, WireFormat.JSON)
    for n in range(60):
        await broker.publish("moved", n)
    await settle()
    epoch = position.epoch
    movers = [Client(hub) for _ in range(30)]
    results = await asyncio.gather(
        *(
            hub.subscribe(
                "moved", mover.outbox, WireFormat.JSON, since=StreamPosition(30 + n, epoch)
            )
            for n, mover in enumerate(movers)
        )
    )
    assert all(recovered for _, recovered in results)
    for n, mover in enumerate(movers):
        assert [e["offset"] for e in mover.events()] == list(range(31 + n, 61))
    assert broker.history_reads <= 2, broker.history_reads
    await hub.close()


async def _one_message_in(
    hub: Hub, broker: MemoryBroker, channel: str
) -> tuple[Client, StreamPosition]:
    """A member of ``channel`` that received one message: it, and that message's position."""
    member = Client(hub)
    await hub.subscribe(channel, member.outbox, WireFormat.JSON)
    await broker.publish(channel, "before")
    await settle()
    return member, StreamPosition(1, member.events()[0]["epoch"])


async def test_a_recovery_is_not_promised_from_an_epoch_the_broker_no_longer_has() -> None:
    """The broker lost the channel's history (a Redis restart without persistence) and
    nothing told this instance yet: a client up to date with the old epoch used to be told
    ``recovered: true``, then closed once the instance noticed. Its subscribe waits for the
    instance to catch up and is told the truth: not recovered, the new epoch from its
    start."""
    broker = MemoryBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()))
    await broker.start(hub)
    member, old = await _one_message_in(hub, broker, "lost")
    broker._logs.clear()  # the broker forgets the channel: its next read starts a new epoch
    comer = Client(hub)
    position, recovered = await hub.subscribe("lost", comer.outbox, WireFormat.JSON, since=old)
    assert member.aborted  # the instance caught up: its clients of the old epoch resubscribe
    assert not recovered and position.epoch != old.epoch and position.offset == 0
    await broker.publish("lost", "after")
    await settle()
    assert [e["data"] for e in comer.events()] == ["after"]
    await hub.close()


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_a_publication_that_cannot_be_written_does_not_break_its_channel(
    setup: Any,
) -> None:
    """Brokers refuse data nested too deep (check_data), but a foreign publisher may not:
    the hub drops that one publication (logged) and the channel goes on, live and healed."""
    broker, hub = setup
    json_client, raw_client = Client(hub), Client(hub)
    await hub.subscribe("deep", json_client.outbox, WireFormat.JSON)
    await hub.subscribe("deep", raw_client.outbox, WireFormat.RAW)
    position = await broker.position("deep")
    hub.on_event(Publication("deep", 1, position.epoch, deep(300)))
    hub.on_event(Publication("deep", 2, position.epoch, "after"))
    await settle()
    assert [e["data"] for e in json_client.events()] == ["after"]
    assert not json_client.aborted and not raw_client.aborted
    # A batch (healing, recovery) skips it too.
    hub._deliver_all(
        hub._channels["deep"],
        [
            Publication("deep", 3, position.epoch, deep(300)),
            Publication("deep", 4, position.epoch, 4),
        ],
    )
    await settle()
    assert [e["data"] for e in json_client.events()] == ["after", 4]


# -- a client of an epoch that was replaced (the broker lost the channel's history)


async def _replace_epoch(broker: MemoryBroker, hub: Hub, channel: str) -> tuple[Client, str]:
    """A member sees offsets 1..3 of the first epoch, then the broker loses the channel
    (as Redis restarting without persistence) and publishes 1..5 of a new one. Returns
    the member (closed by then) and the old epoch."""
    member = Client(hub)
    await hub.subscribe(channel, member.outbox, WireFormat.JSON)
    for n in range(1, 4):
        await broker.publish(channel, f"old {n}")
    await settle()
    old = member.events()[0]["epoch"]
    broker._logs.clear()
    for n in range(1, 6):
        await broker.publish(channel, f"new {n}")
    await settle()
    return member, old


async def test_a_client_of_the_replaced_epoch_gets_the_new_one_from_its_start(
    setup: Any,
) -> None:
    broker, hub = setup
    member, old = await _replace_epoch(broker, hub, "c")
    assert member.aborted  # the instance noticed the new epoch and closed its clients
    new = (await broker.position("c")).epoch
    assert await broker.successor("c", old) == new  # and told the broker, for the others
    returning = Client(hub)
    greeted: list[tuple[StreamPosition, bool]] = []
    position, recovered = await hub.subscribe(
        "c",
        returning.outbox,
        WireFormat.JSON,
        lambda *args: greeted.append(args),
        since=StreamPosition(3, old),
    )
    # Not recovered (the old epoch's tail is gone), greeted at the new epoch's start...
    assert greeted == [(StreamPosition(0, new), False)] == [(position, recovered)]
    await broker.publish("c", "new 6")
    await settle()
    # ... then every message of the new epoch, in order, before the live ones.
    events = returning.events()
    assert [(e["offset"], e["epoch"]) for e in events] == [(n, new) for n in range(1, 7)]
    assert [e["data"] for e in events] == [f"new {n}" for n in range(1, 7)]


async def test_the_record_in_the_broker_serves_an_instance_that_did_not_see_the_change(
    setup: Any,
) -> None:
    broker, hub = setup
    old = (await broker.position("c")).epoch
    broker._logs.clear()
    for n in range(1, 4):
        await broker.publish("c", n)
    new = (await broker.position("c")).epoch
    await broker.supersede("c", old, new)  # as another instance that saw it would
    returning = Client(hub)
    position, recovered = await hub.subscribe(
        "c", returning.outbox, WireFormat.JSON, since=StreamPosition(7, old)
    )
    assert (position, recovered) == (StreamPosition(0, new), False)
    await settle()
    assert [e["offset"] for e in returning.events()] == [1, 2, 3]


@pytest.mark.parametrize(
    ("since_epoch", "why"),
    [
        ("bogus", "an epoch the channel never had"),
        ("OLD", "the replaced epoch, but the new one is longer than recovery_max (4)"),
    ],
)
async def test_a_client_of_another_epoch_still_starts_from_now(since_epoch: str, why: str) -> None:
    broker = MemoryBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()), heal_max=4)
    await broker.start(hub)
    _, old = await _replace_epoch(broker, hub, "c")
    since = StreamPosition(3, old if since_epoch == "OLD" else since_epoch)
    returning = Client(hub)
    position, recovered = await hub.subscribe("c", returning.outbox, WireFormat.JSON, since=since)
    assert (position.offset, recovered) == (5, False), why
    await settle()
    assert returning.events() == [], why
    await hub.close()


async def test_the_new_epoch_is_replayed_whole_past_the_history_size() -> None:
    """The clients the instance closed come back once more of the new epoch landed than
    history keeps (publishers land their backlog the moment Redis is back): the broker
    keeps the new epoch's start apart (``Broker.epoch_start``), so any instance gives
    it whole, this one too, with nobody left subscribed here meanwhile."""
    broker = MemoryBroker(BrokerOptions(history_size=3))
    hub = Hub(broker, Flusher(asyncio.get_running_loop()))
    await broker.start(hub)
    member, old = await _replace_epoch(broker, hub, "c")  # the new epoch's 5 > 3
    await hub.unsubscribe("c", member.outbox)  # the closed client leaves
    assert hub.channel_count == 0
    await broker.publish("c", "new 6")
    returning = Client(hub)
    position, recovered = await hub.subscribe(
        "c", returning.outbox, WireFormat.JSON, since=StreamPosition(3, old)
    )
    assert (position.offset, recovered) == (0, False)
    await settle()
    assert [e["offset"] for e in returning.events()] == [1, 2, 3, 4, 5, 6]
    await hub.close()


@pytest.mark.parametrize(
    ("options", "why"),
    [
        (BrokerOptions(history_size=3, epoch_start_kept=1), "offset 2 is in neither"),
        (BrokerOptions(history_size=3, epoch_start_kept_s=0.0), "no longer new"),
    ],
)
async def test_the_new_epoch_is_not_replayed_once_history_trimmed_its_start(
    options: BrokerOptions, why: str
) -> None:
    broker = MemoryBroker(options)
    hub = Hub(broker, Flusher(asyncio.get_running_loop()))
    await broker.start(hub)
    old = (await broker.position("c")).epoch
    broker._logs.clear()
    for n in range(1, 6):
        await broker.publish("c", n)
    new = (await broker.position("c")).epoch
    await broker.supersede("c", old, new)
    returning = Client(hub)
    position, recovered = await hub.subscribe(
        "c", returning.outbox, WireFormat.JSON, since=StreamPosition(3, old)
    )
    assert (position, recovered) == (StreamPosition(5, new), False), why
    await broker.publish("c", 6)
    await settle()
    assert [e["offset"] for e in returning.events()] == [6], why
    await hub.close()


async def test_a_publish_reply_of_another_epoch_heals_the_channel_at_once(setup: Any) -> None:
    """Pub/sub is still away (Redis just came back): the reply to a publish through this
    instance is the first to tell of the new epoch."""
    broker, hub = setup
    member = Client(hub)
    await hub.subscribe("c", member.outbox, WireFormat.JSON)
    await broker.publish("c", "old")
    await settle()
    await broker.unsubscribe("c")  # pub/sub is down
    broker._logs.clear()
    position = await broker.publish("c", "new 1")
    hub.observe("c", position)
    await settle()
    assert member.aborted
    await broker.subscribe("c")
    old = member.events()[0]["epoch"]
    returning = Client(hub)
    greeted, recovered = await hub.subscribe(
        "c", returning.outbox, WireFormat.JSON, since=StreamPosition(1, old)
    )
    assert (greeted, recovered) == (StreamPosition(0, position.epoch), False)
    await settle()
    assert [e["data"] for e in returning.events()] == ["new 1"]


async def test_a_gap_in_a_new_epoch_past_history_is_healed_from_its_start() -> None:
    """The instance turned to the new epoch before its pub/sub was back (a publish reply
    told it), and the publishers' backlog landed meanwhile, past what history keeps: the
    gap is healed from the epoch's start, which the broker keeps apart, instead of
    closing the clients that had just come back."""
    broker = MemoryBroker(BrokerOptions(history_size=3))
    hub = Hub(broker, Flusher(asyncio.get_running_loop()))
    await broker.start(hub)
    member, old = await _one_message_in(hub, broker, "c")
    await broker.unsubscribe("c")  # pub/sub is down
    broker._logs.clear()  # and Redis lost the channel
    hub.observe("c", await broker.publish("c", "new 1"))
    await settle()
    assert member.aborted
    returning = Client(hub)
    position, _ = await hub.subscribe("c", returning.outbox, WireFormat.JSON, since=old)
    assert position.offset == 0
    for n in range(2, 8):  # the backlog: history keeps 5 to 7
        await broker.publish("c", f"new {n}")
    await broker.subscribe("c")
    hub.on_channels_resubscribed(["c"])
    for _ in range(5):
        await settle()
    assert not returning.aborted
    assert [e["data"] for e in returning.events()] == [f"new {n}" for n in range(1, 8)]
    await hub.close()


class HoldOneHistoryRead(MemoryBroker):
    """The next history read, once made, answers only when ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release: asyncio.Event | None = None

    async def history(self, channel: str, since: int | None, limit: int, **kw: Any) -> Any:
        answer = await super().history(channel, since, limit, **kw)
        release, self.release = self.release, None
        if release is not None:
            await release.wait()
        return answer


async def test_a_recovery_under_way_when_the_channel_turns_to_a_new_epoch_gets_it_whole() -> None:
    """The clients of the lost epoch come back while the instance they come to is healing
    into the new epoch: a recovery planned with the old epoch, whose history read returned
    after the heal, started them from now (drill ``redis-restart``: 11 clients lost the new
    epoch's first 19). It is planned again with the new epoch."""
    broker = HoldOneHistoryRead()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()))
    await broker.start(hub)
    member = Client(hub)
    await hub.subscribe("c", member.outbox, WireFormat.JSON)
    for n in range(1, 4):
        await broker.publish("c", f"old {n}")
    await settle()
    old = StreamPosition(3, member.events()[0]["epoch"])
    broker._logs.clear()  # lost: the next read or publish begins a new epoch
    release = broker.release = asyncio.Event()
    comer = Client(hub)
    subscribing = asyncio.create_task(hub.subscribe("c", comer.outbox, WireFormat.JSON, since=old))
    await settle()  # its history read is made (the new epoch begins) and held
    await broker.publish("c", "new 1")  # the instance notices and heals into the new epoch
    await settle()
    assert member.aborted
    release.set()
    position, recovered = await subscribing
    assert (position.offset, recovered) == (0, False)
    assert position.epoch != old.epoch
    await broker.publish("c", "new 2")
    await settle()
    assert [e["data"] for e in comer.events()] == ["new 1", "new 2"]
    await hub.close()


class GatedHistoryBroker(MemoryBroker):
    """History is read at once, but the answer waits for ``gate``: what was published
    meanwhile is not in it, as with a read in flight when pub/sub drops again."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()

    async def history(self, channel: str, since: int | None, limit: int, **kw: Any) -> Any:
        answer = await super().history(channel, since, limit, **kw)
        await self.gate.wait()
        return answer


async def test_a_resubscribe_during_a_heal_is_healed_too() -> None:
    """The broker reconnects (and says so) while the channel is already healing a gap
    from a history read made before the new gap: the last publication of the new gap,
    with nothing published after it to reveal the gap, is still delivered."""
    broker = GatedHistoryBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()))
    await broker.start(hub)
    client = Client(hub)
    await hub.subscribe("c", client.outbox, WireFormat.JSON)
    await broker.publish("c", 1)
    await settle()
    broker.gate.clear()
    await broker.unsubscribe("c")  # pub/sub skips 2
    await broker.publish("c", 2)
    await broker.subscribe("c")
    await broker.publish("c", 3)  # live: shows the gap, the heal reads history (2, 3)
    await settle()
    await broker.unsubscribe("c")  # pub/sub drops again and skips 4
    await broker.publish("c", 4)
    await broker.subscribe("c")
    hub.on_channels_resubscribed(["c"])
    broker.gate.set()
    await settle()
    assert [e["offset"] for e in client.events()] == [1, 2, 3, 4]
    await hub.close()


class FlakyHistoryBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    async def history(self, channel: str, since: int | None, limit: int, **kw: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise BrokerUnavailable("down")
        return await super().history(channel, since, limit, **kw)


async def test_a_resubscribe_heal_whose_history_read_fails_still_reads_history() -> None:
    broker = FlakyHistoryBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()))
    await broker.start(hub)
    client = Client(hub)
    await hub.subscribe("c", client.outbox, WireFormat.JSON)
    await broker.publish("c", 1)
    await settle()
    await broker.unsubscribe("c")  # pub/sub skips 2, the last one
    await broker.publish("c", 2)
    await broker.subscribe("c")
    broker.failures = 1
    hub.on_channels_resubscribed(["c"])
    for _ in range(30):  # the heal retries after 0.5 s
        await asyncio.sleep(0.05)
        if len(client.events()) == 2:
            break
    assert [e["offset"] for e in client.events()] == [1, 2]
    await hub.close()
