"""The Sentinel broker on a real master, replica and three Sentinels: it finds the master
through the Sentinels and follows a failover without a restart."""

from __future__ import annotations

import asyncio
import time

import redis

from sanic_feeds.brokers import BrokerOptions, create_broker
from tests.integration.test_broker_contract import Recorder, offsets
from tests.support.redis_cluster import SentinelServers


async def test_the_broker_follows_a_failover_and_heals(private_sentinel: SentinelServers) -> None:
    broker = create_broker(
        private_sentinel.url, BrokerOptions(instance_id="sentinel", heartbeat_interval_s=0.2)
    )
    recorder = Recorder()
    await broker.start(recorder)
    try:
        await broker.subscribe("news")
        for n in range(3):
            await broker.publish("news", n)
        assert offsets(await recorder.wait_pubs("news", 3)) == [1, 2, 3]
        old = private_sentinel.current_master()
        await asyncio.to_thread(private_sentinel.failover)
        assert private_sentinel.current_master() is not old
        deadline = time.monotonic() + 20
        while not (recorder.resubscribed and broker.ready):
            assert time.monotonic() < deadline, "never resubscribed on the new master"
            await asyncio.sleep(0.05)
        # Publishing goes to the new master, with the history the replica had.
        position = await broker.publish("news", 3)
        assert position.offset == 4
        assert offsets(await recorder.wait_pubs("news", 4)) == [1, 2, 3, 4]
        pubs, _ = await broker.history("news", None, 10)
        assert [p.data for p in pubs] == [0, 1, 2, 3]

        # A connection that was connecting while the Sentinels switched reached the old
        # master (which accepts writes until Sentinel demotes it, seconds later): the
        # broker does not use it, and the publish lands on the new master.
        pool = broker._redis.connection_pool  # type: ignore[attr-defined]
        stale = await pool.get_connection()
        await stale.disconnect()
        await stale.connect_to((old.host, old.port))
        await pool.release(stale)
        assert (await broker.publish("news", 4)).offset == 5
        new = redis.Redis(host=old.host, port=private_sentinel.current_master().port)
        try:
            assert new.hget("feeds:{news}:meta", "offset") == b"5"
        finally:
            new.close()
    finally:
        await broker.close()


async def test_a_dead_sentinel_holds_nothing_up(private_sentinel: SentinelServers) -> None:
    """The first Sentinel of the URL is down: every new connection asks the next one at
    once (redis-py's default retries waited seconds on the dead one, for each)."""
    private_sentinel.sentinels[0].kill()
    started = time.monotonic()
    broker = create_broker(private_sentinel.url, BrokerOptions(instance_id="one-down"))
    await broker.start(Recorder())
    try:
        assert (await broker.publish("news", 1)).offset == 1
        assert time.monotonic() - started < 3  # the retries on the dead one took 3.3 s a connection
    finally:
        await broker.close()
