"""What the server counts, on the memory broker and fake sockets: no server, no scrape.

Metrics are process-wide (prometheus-client's default registry), so each test reads
how much a series moved during the test, never its absolute value.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from sanic_feeds.brokers.memory import MemoryBroker
from sanic_feeds.codec import WireFormat
from sanic_feeds.errors import CloseCode, ErrorCode
from sanic_feeds.events import StreamPosition
from sanic_feeds.server import metrics
from sanic_feeds.server.hub import Hub
from sanic_feeds.server.node import Node
from sanic_feeds.server.outbox import Flusher, Outbox
from sanic_feeds.settings import Settings
from tests.support.fakes import FakeProtocol, FakeWebSocket


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def delta(name: str, **labels: str) -> Callable[[], float]:
    """How much ``name{labels}`` moved since this call."""
    before = sample(name, **labels)
    return lambda: sample(name, **labels) - before


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def outbox(hub: Hub, max_queue: int = 100) -> Outbox:
    return Outbox(FakeProtocol(), hub.flusher, max_queue, lambda reason: None)


@pytest.fixture
async def counting_hub() -> Any:
    broker = MemoryBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()), fan_out_counter=metrics.FanOutCounter())
    await broker.start(hub)
    yield broker, hub
    await hub.close()


# -- fan-out: per batch, never per subscriber


async def test_fan_out_counts_each_subscriber_once_per_message_by_wire_format(
    counting_hub: Any,
) -> None:
    broker, hub = counting_hub
    for _ in range(3):
        await hub.subscribe("c", outbox(hub), WireFormat.JSON)
    await hub.subscribe("c", outbox(hub), WireFormat.RAW)
    json_moved = delta("feeds_messages_delivered_total", format="json")
    raw_moved = delta("feeds_messages_delivered_total", format="raw")
    lag_samples = delta("feeds_delivery_lag_seconds_count")
    for n in range(5):
        await broker.publish("c", n)
    await settle()
    assert (json_moved(), raw_moved()) == (15, 5)
    # One lag sample per fan-out call, not one per subscriber.
    assert lag_samples() == 5


async def test_a_recovery_counts_what_it_delivers_without_a_lag_sample(
    counting_hub: Any,
) -> None:
    broker, hub = counting_hub
    await hub.subscribe("c", outbox(hub), WireFormat.JSON)  # the channel is open
    first = await broker.publish("c", 1)
    for n in range(2, 5):
        await broker.publish("c", n)
    await settle()
    moved = delta("feeds_messages_delivered_total", format="raw")
    lag_samples = delta("feeds_delivery_lag_seconds_count")
    await hub.subscribe("c", outbox(hub), WireFormat.RAW, since=first)
    assert (moved(), lag_samples()) == (3, 0)


async def test_join_and_leave_are_not_counted_as_messages(counting_hub: Any) -> None:
    from sanic_feeds.events import Join

    broker, hub = counting_hub
    await hub.subscribe("c", outbox(hub), WireFormat.JSON)
    moved = delta("feeds_messages_delivered_total", format="json")
    await broker.publish_event(Join("c", "someone", {}))
    await settle()
    assert moved() == 0


async def test_a_hub_without_a_counter_counts_nothing_on_its_hot_path() -> None:
    broker = MemoryBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()))
    await broker.start(hub)
    await hub.subscribe("c", outbox(hub), WireFormat.JSON)
    moved = delta("feeds_messages_delivered_total", format="json")
    lag_samples = delta("feeds_delivery_lag_seconds_count")
    await broker.publish("c", 1)
    await settle()
    assert (moved(), lag_samples()) == (0, 0)
    await hub.close()


async def test_a_healed_gap_counts_the_gap_and_the_messages_read_from_history(
    counting_hub: Any,
) -> None:
    broker, hub = counting_hub
    await hub.subscribe("c", outbox(hub), WireFormat.JSON)
    await broker.publish("c", 1)
    await settle()
    gaps, healed = delta("feeds_gaps_healed_total"), delta("feeds_messages_healed_total")
    delivered = delta("feeds_messages_delivered_total", format="json")
    # Pub/sub skips offsets 2 and 3; 4 arrives live and the hub reads 2 and 3 from history.
    await broker.unsubscribe("c")
    await broker.publish("c", 2)
    await broker.publish("c", 3)
    await broker.subscribe("c")
    await broker.publish("c", 4)
    for _ in range(20):
        await settle()
    assert (gaps(), healed(), delivered()) == (1, 2, 3)


async def test_a_gap_history_no_longer_holds_is_counted_as_given_up() -> None:
    broker = MemoryBroker()
    hub = Hub(broker, Flusher(asyncio.get_running_loop()))
    await broker.start(hub)
    await hub.subscribe("c", outbox(hub), WireFormat.JSON)
    given_up = delta("feeds_gaps_given_up_total")
    await broker.unsubscribe("c")
    for n in range(150):  # history keeps 100
        await broker.publish("c", n)
    await broker.subscribe("c")
    await broker.publish("c", "live")
    for _ in range(20):
        await settle()
    assert given_up() == 1
    await hub.close()


async def test_the_channel_gauge_follows_the_broker_subscriptions(counting_hub: Any) -> None:
    _, hub = counting_hub
    channels = delta("feeds_channels")
    a, b = outbox(hub), outbox(hub)
    await hub.subscribe("one", a, WireFormat.JSON)
    await hub.subscribe("one", b, WireFormat.JSON)
    await hub.subscribe("two", a, WireFormat.JSON)
    assert channels() == 2
    await hub.unsubscribe("one", a)
    assert channels() == 2
    await hub.unsubscribe("one", b)
    assert channels() == 1
    await hub.close()  # the channels left go with the hub
    assert channels() == 0


async def test_an_overflowing_client_counts_as_a_slow_client_close(counting_hub: Any) -> None:
    _, hub = counting_hub
    protocol = FakeProtocol()
    assert protocol.transport is not None
    protocol.transport.buffered = 10**6  # the peer stopped reading
    slow = Outbox(protocol, hub.flusher, 3, lambda reason: None)
    closes = delta("feeds_slow_client_closes_total")
    for n in range(10):
        slow.put(b"frame %d" % n)
        await settle()
    assert slow.closed
    assert closes() == 1
    # A connection the hub gives up (a gap it cannot heal) is not a slow client.
    other = outbox(hub)
    other.abort()
    assert closes() == 1


# -- the node: connections, subscriptions, publishes, recoveries, closes, errors


@pytest.fixture
async def node() -> Any:
    node = Node(Settings(rate_limit=0))
    await node.start()
    yield node
    await node.stop()


async def test_connections_and_subscriptions_are_gauges_that_come_back_down(node: Node) -> None:
    connections, subscriptions = delta("feeds_connections"), delta("feeds_subscriptions")
    conns = [node.connect(FakeWebSocket(), WireFormat.JSON) for _ in range(3)]
    for conn in conns:
        await node.subscribe(conn, "a", lambda position, recovered: None)
    await node.subscribe(conns[0], "b", lambda position, recovered: None)
    assert (connections(), subscriptions()) == (3, 4)
    assert (node.status().connections, node.status().subscriptions) == (3, 4)
    await node.unsubscribe(conns[0], "b")
    assert subscriptions() == 3
    for conn in conns:
        await node.disconnect(conn)
    await node.disconnect(conns[0])  # a second disconnect changes nothing
    assert (connections(), subscriptions()) == (0, 0)
    assert (node.status().connections, node.status().subscriptions) == (0, 0)


async def test_publishes_are_counted_by_source_with_their_broker_latency(node: Node) -> None:
    json_conn = node.connect(FakeWebSocket(), WireFormat.JSON)
    raw_conn = node.connect(FakeWebSocket(), WireFormat.RAW)
    moved = {
        fmt: delta("feeds_messages_published_total", format=fmt) for fmt in ("json", "raw", "api")
    }
    latencies = delta("feeds_broker_publish_duration_seconds_count")
    await node.publish_from(json_conn, "c", 1)
    await node.publish_from(json_conn, "c", 2)
    await node.publish_from(raw_conn, "c", "three")
    await node.publish("c", 4)
    assert {fmt: counted() for fmt, counted in moved.items()} == {"json": 2, "raw": 1, "api": 1}
    assert latencies() == 4
    for conn in (json_conn, raw_conn):
        await node.disconnect(conn)


async def test_publishes_are_not_counted_with_metrics_off() -> None:
    node = Node(Settings(rate_limit=0, metrics=False))
    await node.start()
    conn = node.connect(FakeWebSocket(), WireFormat.JSON)
    await node.subscribe(conn, "c", lambda position, recovered: None)
    published = delta("feeds_messages_published_total", format="json")
    delivered = delta("feeds_messages_delivered_total", format="json")
    await node.publish_from(conn, "c", 1)
    await settle()
    assert (published(), delivered()) == (0, 0)
    await node.disconnect(conn)
    await node.stop()


async def test_recoveries_are_counted_by_outcome(node: Node) -> None:
    recovered = delta("feeds_recoveries_total", outcome="recovered")
    not_recovered = delta("feeds_recoveries_total", outcome="not_recovered")
    first = await node.publish("c", 1)
    await node.publish("c", 2)
    conn = node.connect(FakeWebSocket(), WireFormat.JSON)
    greet = lambda position, was_recovered: None  # noqa: E731
    await node.subscribe(conn, "c", greet, since=StreamPosition(first.offset, first.epoch))
    await node.subscribe(conn, "d", greet, since=StreamPosition(5, "an epoch long gone"))
    await node.subscribe(conn, "e", greet)  # no since: not a recovery
    assert (recovered(), not_recovered()) == (1, 1)
    await node.disconnect(conn)


async def test_closes_the_server_started_are_counted_by_code(node: Node) -> None:
    closed_by_us = delta("feeds_closes_sent_total", code="1008")
    going_away = delta("feeds_closes_sent_total", code="1001")
    ours = node.connect(FakeWebSocket(), WireFormat.JSON)
    ours.close(CloseCode.POLICY_VIOLATION, "rate limit")
    await node.disconnect(ours)
    theirs = node.connect(FakeWebSocket(), WireFormat.JSON)
    await node.disconnect(theirs)  # the client went away: nothing sent
    assert closed_by_us() == 1
    drained = [node.connect(FakeWebSocket(), WireFormat.JSON) for _ in range(2)]
    node.drain()
    for conn in drained:
        await node.disconnect(conn)
    assert going_away() == 2


async def test_errors_told_to_clients_are_counted_by_code_raw_clients_included(
    node: Node,
) -> None:
    moved = delta("feeds_errors_total", code="rate_limited")
    for wire_format in (WireFormat.JSON, WireFormat.RAW):
        conn = node.connect(FakeWebSocket(), wire_format)
        conn.send_error(ErrorCode.RATE_LIMITED, "slow down")
        await node.disconnect(conn)
    assert moved() == 2


async def test_broker_reconnects_are_counted_by_the_hub(counting_hub: Any) -> None:
    _, hub = counting_hub
    reconnects = delta("feeds_broker_reconnects_total")
    hub.on_resubscribed()
    assert reconnects() == 1


# -- multiprocess mode: the directory and dead workers


def test_prepare_multiprocess_dir_wipes_an_earlier_run_and_exports_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "keep.txt").write_text("not ours")
    path, created = metrics.prepare_multiprocess_dir(str(tmp_path))
    assert (path, created) == (str(tmp_path), False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert os.environ[metrics.MULTIPROC_ENV] == str(tmp_path)


def test_prepare_multiprocess_dir_creates_one_when_none_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    path, created = metrics.prepare_multiprocess_dir()
    try:
        assert created and os.path.isdir(path)
        assert os.environ[metrics.MULTIPROC_ENV] == path
    finally:
        monkeypatch.delenv(metrics.MULTIPROC_ENV)
        metrics.remove_multiprocess_dir(path)
    assert not os.path.exists(path)


def test_a_scrape_drops_the_gauges_of_workers_that_died_without_saying_so(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead_pid, live_pid = int(dead.stdout), os.getpid()
    for name in (
        f"gauge_livesum_{dead_pid}.db",
        f"gauge_livesum_{live_pid}.db",
        f"counter_{dead_pid}.db",  # a dead worker's counts still count
    ):
        (tmp_path / name).write_bytes(b"")
    assert metrics.prune_dead_processes(str(tmp_path)) == [dead_pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{dead_pid}.db", f"gauge_livesum_{live_pid}.db"]
    )
