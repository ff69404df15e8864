"""Drills under load, with real servers, real Redis and real clients: the slots of one
cluster primary migrate to another, a cluster primary with a replica dies, a Sentinel
master fails over.

Each drill runs two ``sanic-feeds serve`` instances (one with two workers) on the broker,
a subscriber of every channel on each instance (``/feed/<channel>``, read raw off the
wire), and one backend ``Publisher`` per channel publishing all along (with its retry
buffer and idempotency keys, as a worker that must not lose messages would). Then it
accounts for every publish each subscriber should have seen: received once, in order;
or, after the server closed it, resumed with ``since`` and either recovered or told
``recovered: false``. Anything else is an unexplained loss, and every drill asserts
there are none. ``pytest -s`` prints each drill's account.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sanic_feeds import Publisher
from sanic_feeds.brokers.keys import channel_keys
from sanic_feeds.brokers.slots import slot_of
from tests.support.redis_cluster import ClusterServers, SentinelServers

pytestmark = pytest.mark.integration

#: Seconds between two publishes of one channel's publisher.
PUBLISH_EVERY_S = 0.02


@dataclass
class Subscriber:
    """One ``/feed/<channel>`` client on one instance, that resumes with ``since`` when the
    server closes it, and keeps what it saw."""

    ws_url: str
    channel: str
    #: Offsets received, in order.
    offsets: list[int] = field(default_factory=list)
    #: Offsets after which the server said it could not recover (``recovered: false``).
    unrecovered_after: list[int] = field(default_factory=list)
    #: Close codes the server sent.
    closes: list[int | None] = field(default_factory=list)
    epoch: str = ""

    async def open(self) -> ClientConnection:
        query = ""
        if self.offsets:
            query = f"?since={self.offsets[-1]}&epoch={self.epoch}"
        ws = await connect(f"{self.ws_url}/feed/{self.channel}{query}", open_timeout=10)
        subscribed = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert subscribed["type"] == "subscribed", subscribed
        if self.offsets and not subscribed["recovered"]:
            self.unrecovered_after.append(self.offsets[-1])
        self.epoch = subscribed["epoch"]
        return ws

    async def read(self, ws: ClientConnection, until: Callable[[], int | None]) -> None:
        """Read (resuming after a close) until the last offset is ``until()``."""
        while True:
            try:
                while True:
                    target = until()
                    if target is not None and self.offsets and self.offsets[-1] >= target:
                        await ws.close()
                        return
                    try:
                        frame = await asyncio.wait_for(ws.recv(), 0.5)
                    except TimeoutError:
                        continue
                    event = orjson.loads(frame)
                    if event["type"] == "message":
                        self.offsets.append(event["offset"])
                        self.epoch = event["epoch"]
            except ConnectionClosed as closed:
                self.closes.append(closed.rcvd.code if closed.rcvd else None)
                await asyncio.sleep(0.2)
                ws = await self.open()


@dataclass
class Account:
    """What one drill's subscribers saw against what was published."""

    published: dict[str, list[int]]
    subscribers: list[Subscriber]
    #: The servers' logs, after the drill.
    logs: str = ""

    def unexplained(self) -> list[str]:
        problems = []
        for sub in self.subscribers:
            accepted = self.published[sub.channel]
            seen = sub.offsets
            if len(set(seen)) != len(seen):
                problems.append(f"{sub.channel}@{sub.ws_url}: duplicates")
            if seen != sorted(seen):
                problems.append(f"{sub.channel}@{sub.ws_url}: out of order")
            expected = [o for o in accepted if o > (seen[0] - 1 if seen else 0)]
            missing = sorted(set(expected) - set(seen))
            explained = [o for o in missing if any(after < o for after in sub.unrecovered_after)]
            if len(explained) != len(missing):
                problems.append(
                    f"{sub.channel}@{sub.ws_url}: lost {sorted(set(missing) - set(explained))}"
                )
        return problems

    def summary(self, drill: str) -> str:
        total = sum(len(offsets) for offsets in self.published.values())
        delivered = sum(len(s.offsets) for s in self.subscribers)
        closes = sum(len(s.closes) for s in self.subscribers)
        unrecovered = sum(len(s.unrecovered_after) for s in self.subscribers)
        return (
            f"{drill}: {total} published on {len(self.published)} channels, {delivered} "
            f"delivered to {len(self.subscribers)} subscribers, {closes} closed by the server, "
            f"{unrecovered} told recovered: false, {len(self.unexplained())} unexplained"
        )


async def drill(
    broker_url: str,
    feeds_server_factory: Any,
    channels: list[str],
    incident: Callable[[], Awaitable[None]],
    *,
    settle_s: float = 1.0,
) -> Account:
    """Serve ``channels`` under load, run ``incident`` meanwhile, then account."""
    servers = [
        feeds_server_factory(broker_url, args=["--workers", "2"]),
        feeds_server_factory(broker_url),
    ]
    subscribers = [Subscriber(s.ws_url, c) for s in servers for c in channels]
    sockets = [await sub.open() for sub in subscribers]
    published: dict[str, list[int]] = {c: [] for c in channels}
    stop = asyncio.Event()

    async def publish(channel: str) -> None:
        async with Publisher(broker_url, retry_buffer=100, retry_for_s=60) as pub:
            n = 0
            while not stop.is_set():
                position = await pub.publish(channel, n)
                published[channel].append(position.offset)
                n += 1
                await asyncio.sleep(PUBLISH_EVERY_S)

    def last_published(channel: str) -> Callable[[], int | None]:
        return lambda: published[channel][-1] if stop.is_set() and published[channel] else None

    publishers = [asyncio.create_task(publish(c)) for c in channels]
    readers = [
        asyncio.create_task(sub.read(ws, last_published(sub.channel)))
        for sub, ws in zip(subscribers, sockets, strict=True)
    ]
    try:
        await asyncio.sleep(settle_s)
        await incident()
        await asyncio.sleep(settle_s)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*publishers), 60)
        await asyncio.wait_for(asyncio.gather(*readers), 60)
    finally:
        stop.set()
        for task in (*publishers, *readers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return Account(published, subscribers, "\n".join(server.log() for server in servers))


def channels_on(cluster: ClusterServers, count_per_primary: int) -> dict[int, list[str]]:
    """Channel names, ``count_per_primary`` on each primary, by its index in ``masters``."""
    slot_map = cluster.slot_map()
    ports = [m.port for m in cluster.masters]
    found: dict[int, list[str]] = {i: [] for i in range(len(ports))}
    n = 0
    while any(len(names) < count_per_primary for names in found.values()):
        name = f"drill-{n}"
        owner = slot_map.owner(slot_of(channel_keys(name).pubsub))
        index = ports.index(owner.port) if owner is not None else -1
        if index >= 0 and len(found[index]) < count_per_primary:
            found[index].append(name)
        n += 1
    return found


async def test_clients_lose_nothing_while_every_slot_of_a_primary_migrates(
    private_cluster: ClusterServers, feeds_server_factory: Any
) -> None:
    """``redis-cli --cluster reshard`` moves every slot of one primary to another, one at a
    time, while publishes flow: each channel's subscription follows its slot, and what
    pub/sub did not bring meanwhile is healed from history. No client is closed, none
    misses, repeats or reorders anything."""
    cluster = private_cluster
    on = channels_on(cluster, 2)
    source, target = cluster.masters[1], cluster.masters[2]

    async def reshard() -> None:
        started = time.monotonic()
        await asyncio.to_thread(cluster.move_all_slots, source, target)
        print(f"\nresharded in {time.monotonic() - started:.1f}s")
        assert source.port not in {owner.port for owner in cluster.slot_map().owners}
        for name in on[1]:
            assert cluster.owner_of(channel_keys(name).pubsub) is target

    account = await drill(cluster.url, feeds_server_factory, [*on[0], *on[1]], reshard)
    followed = account.logs.count("its slot moved")
    print(account.summary("reshard") + f"; {followed} subscriptions followed their slot")
    assert account.unexplained() == []
    assert all(sub.closes == [] for sub in account.subscribers)
    # Both instances' brokers (the worker that serves the channel's subscriber on the
    # first) followed each moved channel.
    assert followed >= 2 * len(on[1])


async def test_clients_lose_nothing_unexplained_when_a_cluster_primary_dies(
    private_cluster: ClusterServers, feeds_server_factory: Any
) -> None:
    """The primary with a replica is killed under load: its channels come back on the
    promoted replica and are healed; the other shards never stop."""
    cluster = private_cluster
    on = channels_on(cluster, 2)
    doomed = cluster.masters[0]

    async def kill() -> None:
        started = time.monotonic()
        doomed.kill()
        await asyncio.to_thread(cluster.wait_for_failover, doomed)
        print(f"\nfailed over in {time.monotonic() - started:.1f}s")

    account = await drill(cluster.url, feeds_server_factory, [*on[0], *on[1]], kill, settle_s=2)
    print(account.summary("cluster primary killed"))
    assert account.unexplained() == []


async def test_clients_lose_nothing_unexplained_when_the_sentinel_master_dies(
    private_sentinel: SentinelServers, feeds_server_factory: Any
) -> None:
    """The master is killed under load; the Sentinels promote the replica and the
    instances follow it without a restart."""
    servers = private_sentinel

    async def kill() -> None:
        started = time.monotonic()
        old = servers.current_master()
        old.kill()
        await asyncio.to_thread(servers.wait_for_new_master, old)
        print(f"\nfailed over in {time.monotonic() - started:.1f}s")

    channels = ["drill-a", "drill-b", "drill-c"]
    account = await drill(servers.url, feeds_server_factory, channels, kill, settle_s=2)
    print(account.summary("sentinel master killed"))
    assert account.unexplained() == []
