"""The Redis Cluster broker on a real cluster, beyond the shared contract
(``test_broker_contract.py`` runs that on it too): one pub/sub connection per primary, the
three ways a subscription ends (its slot migrates, the node answers MOVED, the node dies),
each followed by resubscribing where the channel now lives and telling the handler which
channels to heal, and the heartbeat on every shard connection.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sanic_feeds.brokers import Broker, BrokerOptions, create_broker
from sanic_feeds.brokers.keys import channel_keys
from sanic_feeds.brokers.slots import slot_of
from sanic_feeds.errors import BrokerUnavailable
from sanic_feeds.events import Join
from tests.integration.test_broker_contract import Recorder, offsets
from tests.support.redis_cluster import ClusterServers
from tests.support.redis_server import RedisServer

StartBroker = Callable[..., Awaitable[tuple[Broker, Recorder]]]


def channels_on(
    cluster: ClusterServers, primary: RedisServer, count: int, prefix: str = "c"
) -> list[str]:
    """``count`` channel names whose slot ``primary`` owns, none in a slot a heartbeat may
    use (the broker's heartbeat names take the first tags "0", "1", ... that land on each
    primary), so that moving their slot moves nothing else of the broker's."""
    heartbeat_slots = {slot_of(str(n)) for n in range(64)}
    slot_map = cluster.slot_map()
    found: list[str] = []
    n = 0
    while len(found) < count:
        name = f"{prefix}{n}"
        slot = slot_of(channel_keys(name).pubsub)
        owner = slot_map.owner(slot)
        if owner is not None and owner.port == primary.port and slot not in heartbeat_slots:
            found.append(name)
        n += 1
    return found


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def start_broker() -> AsyncIterator[Callable[..., Awaitable[tuple[Broker, Recorder]]]]:
    started: list[Broker] = []

    async def start(url: str, **options: Any) -> tuple[Broker, Recorder]:
        options.setdefault("instance_id", f"cluster-{secrets.token_hex(4)}")
        options.setdefault("heartbeat_interval_s", 0.2)
        broker = create_broker(url, BrokerOptions(**options))
        recorder = Recorder()
        await broker.start(recorder)
        started.append(broker)
        return broker, recorder

    yield start
    for broker in reversed(started):
        await broker.close()


def pubsub_connections(cluster: ClusterServers, node: RedisServer, instance_id: str) -> int:
    client = cluster.client(node)
    try:
        return sum(
            1 for c in client.client_list(_type="pubsub") if c["name"] == f"feeds-{instance_id}"
        )
    finally:
        client.close()


async def test_one_connection_per_primary_carries_the_channels_of_its_slots(
    redis_cluster_url: str, redis_cluster: ClusterServers, start_broker: StartBroker
) -> None:
    broker, recorder = await start_broker(redis_cluster_url, instance_id="per-primary")
    channels = [
        c for primary in redis_cluster.masters for c in channels_on(redis_cluster, primary, 3)
    ]
    for channel in channels:
        await broker.subscribe(channel)
    for channel in channels:
        for n in range(3):
            await broker.publish(channel, n)
    for channel in channels:
        assert [p.data for p in await recorder.wait_pubs(channel, 3)] == [0, 1, 2]
    await wait_for(lambda: broker.ready, "ready")
    for primary in redis_cluster.masters:
        assert pubsub_connections(redis_cluster, primary, "per-primary") == 1
    await broker.close()
    for primary in redis_cluster.masters:
        assert pubsub_connections(redis_cluster, primary, "per-primary") == 0


async def test_a_migrated_slot_is_followed_and_only_its_channels_are_healed(
    private_cluster: ClusterServers, start_broker: StartBroker
) -> None:
    """The source sends ``sunsubscribe`` when it hands the slot over; meanwhile a publish
    went to the target (its keys were there), which pub/sub did not bring us: the broker
    resubscribes on the target and names the channel, and no other, for healing."""
    cluster = private_cluster
    broker, recorder = await start_broker(cluster.url)
    source, stays_put = cluster.masters[0], cluster.masters[1]
    [moving] = channels_on(cluster, source, 1, "moving")
    [staying] = channels_on(cluster, stays_put, 1, "staying")
    for channel in (moving, staying):
        await broker.subscribe(channel)
        await broker.publish(channel, "before")
    await recorder.wait_for(moving, 1)
    skipped: list[int] = []

    def publish_on_the_target() -> None:
        async def publish() -> None:
            skipped.append((await broker.publish(moving, "during")).offset)

        asyncio.run_coroutine_threadsafe(publish(), loop).result(10)

    loop = asyncio.get_running_loop()
    target = cluster.masters[2]
    await asyncio.to_thread(
        cluster.move_slot, slot_of(moving), target, before_handover=publish_on_the_target
    )
    await wait_for(lambda: recorder.channels_resubscribed == [moving], "the channel to be back")
    await broker.publish(moving, "after")
    await broker.publish(staying, "after")
    assert offsets(await recorder.wait_pubs(moving, 2)) == [1, 3]  # 2 is in history
    assert offsets(await recorder.wait_pubs(staying, 2)) == [1, 2]
    assert skipped == [2]
    pubs, _ = await broker.history(moving, 0, 10)
    assert [p.data for p in pubs] == ["before", "during", "after"]
    assert cluster.owner_of(channel_keys(moving).pubsub) is target
    await wait_for(lambda: broker.ready, "ready again")


async def test_a_stale_slot_map_is_corrected_by_the_nodes_moved_answer(
    private_cluster: ClusterServers, start_broker: StartBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A slot moved while the broker had nothing in it, so nothing told it: its first
    SSUBSCRIBE goes to the old owner, which answers MOVED; subscribe still returns once
    the new owner confirms."""
    cluster = private_cluster
    broker, recorder = await start_broker(cluster.url)
    [channel] = channels_on(cluster, cluster.masters[0], 1, "stale")
    await asyncio.to_thread(cluster.move_slot, slot_of(channel), cluster.masters[1])
    with caplog.at_level(logging.INFO, logger="sanic_feeds.broker"):
        await broker.subscribe(channel)
    assert any("MOVED" in r.getMessage() or "refused" in r.getMessage() for r in caplog.records)
    await broker.publish(channel, "hello")
    assert [p.data for p in await recorder.wait_pubs(channel, 1)] == ["hello"]
    assert recorder.channels_resubscribed == []  # a new subscription: nothing to heal


async def test_a_dead_primary_is_replaced_by_its_replica_and_only_its_channels_are_healed(
    private_cluster: ClusterServers, start_broker: StartBroker
) -> None:
    cluster = private_cluster
    broker, recorder = await start_broker(cluster.url, instance_id="survivor")
    doomed = cluster.masters[0]  # the one with a replica
    lost = channels_on(cluster, doomed, 3, "lost")
    kept = channels_on(cluster, cluster.masters[1], 3, "kept")
    for channel in lost + kept:
        await broker.subscribe(channel)
        await broker.publish(channel, 1)
    doomed.kill()
    await wait_for(lambda: not broker.ready, "not ready once a shard is gone", 10)
    # The other shards keep delivering meanwhile.
    for channel in kept:
        await broker.publish(channel, 2)
        assert offsets(await recorder.wait_pubs(channel, 2)) == [1, 2]
    await asyncio.to_thread(cluster.wait_for_failover, doomed)
    await wait_for(lambda: sorted(recorder.channels_resubscribed) == sorted(lost), "healing", 30)
    await wait_for(lambda: broker.ready, "ready again", 30)
    for channel in lost:
        position = await broker.publish(channel, 2)
        delivered = await recorder.wait_pubs(channel, 2)
        assert delivered[-1].offset == position.offset
    assert pubsub_connections(cluster, cluster.replicas[0], "survivor") == 1


async def test_every_shard_connection_carries_the_heartbeat(
    private_cluster: ClusterServers, start_broker: StartBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """One primary stops answering (CLIENT PAUSE): its connection no longer hears the
    instance's heartbeat, nor anything else, so the instance is not ready, the connection
    is dropped as deaf after five intervals, and all is well again once it answers."""
    caplog.set_level(logging.WARNING, "sanic_feeds.broker")
    cluster = private_cluster
    broker, recorder = await start_broker(cluster.url)
    [channel] = channels_on(cluster, cluster.masters[2], 1, "paused")
    await broker.subscribe(channel)
    await wait_for(lambda: broker.ready, "ready")
    client = cluster.client(cluster.masters[2])
    try:
        # Longer than the heartbeat's own bound on its commands (2 s): the deafness check
        # runs while the node is still silent.
        client.execute_command("CLIENT", "PAUSE", 3000, "ALL")
    finally:
        client.close()
    await wait_for(lambda: not broker.ready, "not ready while a shard is silent", 2)
    await wait_for(lambda: broker.ready, "ready once it answers again", 15)
    assert "went deaf" in caplog.text
    await broker.publish(channel, "through")
    assert [p.data for p in await recorder.wait_pubs(channel, 1)] == ["through"]


async def test_calls_raise_broker_unavailable_when_the_cluster_is_gone(
    private_cluster: ClusterServers,
) -> None:
    """RedisCluster raises RedisClusterException (no RedisError) when no node answers;
    callers still get BrokerUnavailable, quickly, and closing still works."""
    broker = create_broker(private_cluster.url, BrokerOptions(instance_id="gone"))
    await broker.start(Recorder())
    try:
        await broker.publish("c", 1)
        for node in private_cluster.nodes:
            node.kill()
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
        await broker.unsubscribe("c")
        assert not broker.ready
    finally:
        started = time.monotonic()
        await broker.close()
        assert time.monotonic() - started < 10
