"""One test per known defect of the "Sanic websocket feeds v3" pattern this project grew from.

Each drives real server processes with real WebSocket clients, and each fails
against the naive pattern: one shared PubSub read without looking at the
channel, ``pubsub.reset()`` on destroy, a fan-out loop that awaits every
send, a destroy that races a join, ``unregister`` only on the clean path, and
receivers that end silently when Redis goes away.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.support.ws import (
    close_code,
    open_feed,
    publish_http,
    ready_is,
    recv_messages,
    recv_reply,
    wait_until,
)

pytestmark = pytest.mark.integration


async def numsub(redis_url: str, channel: str) -> int:
    client = aioredis.from_url(redis_url)
    try:
        [(_, count)] = await client.pubsub_numsub(f"feeds:{{{channel}}}")
        return int(count)
    finally:
        await client.aclose()


async def test_defect1_messages_of_one_channel_never_reach_clients_of_another(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(broker=redis_url)
    alpha = await open_feed(server.ws_url, "alpha")
    beta = await open_feed(server.ws_url, "beta")
    for n in range(20):
        await publish_http(server.url, "alpha", {"n": n, "ch": "alpha"})
        await publish_http(server.url, "beta", {"n": n, "ch": "beta"})
    got_alpha = await recv_messages(alpha, 20)
    got_beta = await recv_messages(beta, 20)
    assert {m["channel"] for m in got_alpha} == {"alpha"}
    assert {m["data"]["ch"] for m in got_alpha} == {"alpha"}
    assert [m["data"]["n"] for m in got_alpha] == list(range(20))
    assert {m["data"]["ch"] for m in got_beta} == {"beta"}
    assert [m["data"]["n"] for m in got_beta] == list(range(20))
    await alpha.close()
    await beta.close()


async def test_defect2_one_channel_emptying_leaves_other_channels_subscribed(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(broker=redis_url)
    alpha = await open_feed(server.ws_url, "alpha")
    beta = await open_feed(server.ws_url, "beta")
    await alpha.close()
    await wait_until(lambda: _zero(numsub(redis_url, "alpha")), what="alpha unsubscribed")
    assert await numsub(redis_url, "beta") == 1
    await publish_http(server.url, "beta", "still here")
    # Delivered live, not healed later: an instance whose subscriptions all went
    # (its heartbeat's too) notices in 5 s, reconnects and heals from history.
    [message] = await recv_messages(beta, 1, timeout_s=3)
    assert message["data"] == "still here"
    assert "reconnecting" not in server.log()
    await beta.close()


async def _zero(count: Any) -> bool:
    return await count == 0


async def test_defect3_a_client_that_stops_reading_delays_nobody(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory(args=["--max-queue", "100"])
    # max_queue=1: the client library stops reading the socket as soon as one
    # frame is buffered, so TCP backpressure reaches the server.
    stuck = await open_feed(server.ws_url, "busy", max_queue=1)
    reader = await open_feed(server.ws_url, "busy")
    published = 300
    payload = "x" * 60_000  # 18 MB in all: more than the kernel buffers hold
    received: list[Any] = []

    async def read_all() -> None:
        received.extend(await recv_messages(reader, published, timeout_s=60))

    reading = asyncio.create_task(read_all())
    for n in range(published):
        status, _ = await publish_http(server.url, "busy", {"n": n, "p": payload})
        assert status == 200
    await reading
    assert [m["data"]["n"] for m in received] == list(range(published))
    assert await close_code(stuck, timeout_s=30) == 1013
    await reader.close()


async def test_defect4_joins_racing_the_last_leave_never_end_up_unsubscribed(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(broker=redis_url)

    async def churn(cycles: int) -> None:
        for _ in range(cycles):
            ws = await open_feed(server.ws_url, "race")
            await ws.close()

    # 300 join/leave cycles, 30 at a time, all on one channel of one instance.
    await asyncio.gather(*(churn(10) for _ in range(30)))
    stayer = await open_feed(server.ws_url, "race")
    assert await numsub(redis_url, "race") == 1
    await publish_http(server.url, "race", "after the storm")
    [message] = await recv_messages(stayer, 1)
    assert message["data"] == "after the storm"
    await stayer.close()
    await wait_until(lambda: _zero(numsub(redis_url, "race")), what="last leave unsubscribes")


async def test_defect5_a_socket_dying_mid_fanout_does_not_end_the_channel(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(broker=redis_url)
    healthy = [await open_feed(server.ws_url, "fragile") for _ in range(5)]
    doomed = [await open_feed(server.ws_url, "fragile") for _ in range(10)]
    published = 200

    async def publish_all() -> None:
        for n in range(published):
            await publish_http(server.url, "fragile", n)

    publishing = asyncio.create_task(publish_all())
    await asyncio.sleep(0.05)
    for ws in doomed:
        # No close handshake: the server finds out while writing to it.
        ws.transport.abort()
        await asyncio.sleep(0.01)
    await publishing
    for ws in healthy:
        messages = await recv_messages(ws, published)
        assert [m["data"] for m in messages] == list(range(published))
    # The channel still works for newcomers too.
    late = await open_feed(server.ws_url, "fragile")
    await publish_http(server.url, "fragile", "late")
    [message] = await recv_messages(late, 1)
    assert message["data"] == "late"


async def test_defect6_pubsub_connection_killed_by_redis_is_reconnected_without_loss(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    server = feeds_server_factory(broker=private_redis.url)
    subscriber = await open_feed(server.ws_url, "live")
    published = 150
    admin = aioredis.from_url(private_redis.url)

    async def publish_all() -> None:
        for n in range(published):
            status, body = await publish_http(server.url, "live", n)
            assert status == 200, body
            if n == 50:
                killed = await admin.client_kill_filter(_type="pubsub")
                assert killed >= 1
            await asyncio.sleep(0.005)

    await publish_all()
    messages = await recv_messages(subscriber, published, timeout_s=30)
    assert [m["data"] for m in messages] == list(range(published))
    assert [m["offset"] for m in messages] == list(range(1, published + 1))
    await admin.aclose()
    await subscriber.close()


async def test_defect6_redis_restart_without_persistence_never_leaves_a_dead_feed(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    server = feeds_server_factory(broker=private_redis.url)
    subscriber = await open_feed(server.ws_url, "live")
    await publish_http(server.url, "live", "before")
    await recv_messages(subscriber, 1)

    private_redis.kill()
    await wait_until(lambda: ready_is(server, 503), what="/ready turns 503")
    status, body = await publish_http(server.url, "live", "during")
    assert (status, body["code"]) == (503, "unavailable")
    await subscriber.send("from a client during the outage")
    error = await recv_reply(subscriber)
    assert (error["type"], error["code"]) == ("error", "unavailable")

    private_redis.restart()
    await wait_until(lambda: ready_is(server, 200), what="/ready turns 200")
    # History was lost with the restart: the client is told to resubscribe
    # (1013) rather than left on a feed that silently skipped messages.
    assert await close_code(subscriber) == 1013
    again = await open_feed(server.ws_url, "live")
    await publish_http(server.url, "live", "after")
    [message] = await recv_messages(again, 1)
    assert message["data"] == "after"
    await again.close()


async def test_defect6_redis_restart_with_persistence_heals_without_a_gap(
    feeds_server_factory: Any, private_redis_aof: Any
) -> None:
    server = feeds_server_factory(broker=private_redis_aof.url)
    subscriber = await open_feed(server.ws_url, "kept")
    publisher = feeds_server_factory(broker=private_redis_aof.url)
    for n in range(5):
        await publish_http(publisher.url, "kept", n)
    private_redis_aof.restart()
    for instance in (server, publisher):
        await wait_until(lambda i=instance: ready_is(i, 200), what="/ready back")
    for n in range(5, 10):
        status, body = await publish_http(publisher.url, "kept", n)
        assert status == 200, body
    messages = await recv_messages(subscriber, 10)
    assert [m["data"] for m in messages] == list(range(10))
    assert [m["offset"] for m in messages] == list(range(1, 11))
    await subscriber.close()
