"""``sanic_feeds.client.FeedsClient`` against real servers: it reconnects by itself and the
application sees a gap-free stream, or an explicit ``Subscribed(recovered=False)``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import urllib.request
from typing import Any

import orjson
import pytest

from sanic_feeds import Publication
from sanic_feeds.client import FeedsClient, Subscribed, SubscriptionRefused
from sanic_feeds.events import StreamPosition
from tests.support.ws import publish_http, ready_is, wait_until

pytestmark = pytest.mark.integration


async def _collect(client: FeedsClient, into: list[Any]) -> None:
    """Publications and subscription notices (this test reads no joins and leaves); a
    channel refused for good is recorded and the iteration goes on."""
    while True:
        try:
            async for event in client:
                if isinstance(event, Publication | Subscribed):
                    into.append(event)
        except SubscriptionRefused as refused:
            into.append(refused)


async def _restart_and_wait_resubscribed(server: Any, events: list[Any]) -> None:
    """Kill the client's server, start it again, and wait for the client to renew."""
    server.kill()
    await asyncio.to_thread(server.start)
    await wait_until(
        lambda: any(isinstance(e, Subscribed) and e.resumed for e in events),
        timeout_s=30,
        what="the client to resubscribe",
    )


async def _published(base_url: str, data: Any, extra: dict[str, Any]) -> bool:
    status, _ = await publish_http(base_url, "volatile", data, extra)
    return bool(status == 200)


def _offsets(events: list[Any], channel: str) -> list[int]:
    return [e.offset for e in events if isinstance(e, Publication) and e.channel == channel]


class _CuttableProxy:
    """A TCP proxy in front of a feeds server. ``cut()`` drops every connection open now,
    the way a network fails, without touching the server; later connections go through."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> int:
        """Abort every open connection; returns how many there were."""
        cut = len(self._transports)
        for transport in list(self._transports):
            transport.abort()
        return cut

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.transport.abort()
            self._tasks.discard(task)
            return
        ends = {writer.transport, up_writer.transport}
        self._transports |= ends

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()

        try:
            pumps = [
                asyncio.create_task(pump(reader, up_writer)),
                asyncio.create_task(pump(up_reader, writer)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for each in pumps:
                each.cancel()
        finally:
            for end in ends:
                end.abort()
            self._transports -= ends
            self._tasks.discard(task)


async def test_the_client_rides_over_its_server_being_killed_and_sees_every_message_once(
    feeds_server_factory: Any, redis_url: str
) -> None:
    serving = feeds_server_factory(broker=redis_url)
    publishing = feeds_server_factory(broker=redis_url)
    total = 200
    events: list[Any] = []
    async with FeedsClient(serving.ws_url, backoff_min_s=0.05, backoff_max_s=0.5) as client:
        first = await client.subscribe("orders")
        assert (first.recovered, first.offset) == (False, 0)
        collecting = asyncio.create_task(_collect(client, events))
        for n in range(total):
            status, body = await publish_http(publishing.url, "orders", n)
            assert status == 200, body
            if n == 60:
                serving.kill()
            if n == 120:
                await asyncio.to_thread(serving.start)
        await wait_until(
            lambda: sum(isinstance(e, Publication) for e in events) >= total,
            timeout_s=30,
            what="every message through the client",
        )
        collecting.cancel()

    messages = [e for e in events if isinstance(e, Publication)]
    assert [m.offset for m in messages] == list(range(1, total + 1))
    assert [m.data for m in messages] == list(range(total))
    renewed = [e for e in events if isinstance(e, Subscribed) and e.resumed]
    assert renewed and all(e.recovered for e in renewed), renewed


async def test_when_history_is_lost_the_client_says_not_recovered(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    server = feeds_server_factory(broker=private_redis.url)
    events: list[Any] = []
    async with FeedsClient(server.ws_url, backoff_min_s=0.05, backoff_max_s=0.5) as client:
        await client.subscribe("volatile")
        collecting = asyncio.create_task(_collect(client, events))
        await publish_http(server.url, "volatile", "before")
        await wait_until(lambda: events, what="the first message")

        private_redis.restart()
        await wait_until(
            lambda: any(isinstance(e, Subscribed) and e.resumed for e in events),
            timeout_s=30,
            what="the client to resubscribe after the restart",
        )
        await publish_http(server.url, "volatile", "after")
        await wait_until(lambda: len(events) >= 4, what="the message after the restart")
        collecting.cancel()

    greeted, before, renewed, after = events
    assert isinstance(greeted, Subscribed) and not greeted.resumed
    assert (greeted.recovered, greeted.was_recovering) == (False, False)
    assert isinstance(before, Publication) and before.data == "before"
    assert isinstance(renewed, Subscribed) and renewed.resumed and renewed.recovered is False
    assert renewed.was_recovering  # this one lost messages; the greeting did not
    assert isinstance(after, Publication) and after.data == "after"
    assert after.epoch != before.epoch


async def test_after_history_is_lost_the_client_gets_the_new_epoch_from_its_start(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    """What was published in the new epoch before the client resubscribed is not lost:
    ``recovered=False`` at offset 0 of the new epoch, then every message of it."""
    server = feeds_server_factory(broker=private_redis.url)
    events: list[Any] = []
    async with FeedsClient(server.ws_url, backoff_min_s=0.05, backoff_max_s=0.5) as client:
        await client.subscribe("volatile")
        collecting = asyncio.create_task(_collect(client, events))
        await publish_http(server.url, "volatile", "before")
        await wait_until(lambda: events, what="the first message")

        await asyncio.to_thread(private_redis.restart)
        for n in range(1, 4):  # riding over the 503s of a Redis coming back
            key = {"idempotency_key": f"k{n}"}
            await wait_until(
                lambda n=n, key=key: _published(server.url, f"new {n}", key),
                timeout_s=20,
                what="Redis back",
            )
        await wait_until(lambda: len(events) >= 6, timeout_s=30, what="the new epoch")
        collecting.cancel()

    _, before, renewed, *new = events
    assert isinstance(before, Publication) and before.data == "before"
    assert isinstance(renewed, Subscribed) and renewed.resumed
    assert (renewed.recovered, renewed.offset) == (False, 0) and renewed.epoch != before.epoch
    assert [(e.offset, e.epoch, e.data) for e in new] == [
        (n, renewed.epoch, f"new {n}") for n in range(1, 4)
    ]


async def test_a_first_subscription_reads_differently_from_a_failed_recovery(
    feeds_server_factory: Any,
) -> None:
    """Both are ``recovered=False``; only the failed recovery has ``was_recovering``, so the
    README's "messages were lost" branch does not run on a first subscribe."""
    server = feeds_server_factory()
    await publish_http(server.url, "news", "old")
    events: list[Any] = []
    async with FeedsClient(server.ws_url) as client:
        first = await client.subscribe("news")
        lost = await client.subscribe("other", since=StreamPosition(5, "an-epoch-long-gone"))
        collecting = asyncio.create_task(_collect(client, events))
        await wait_until(lambda: len(events) == 2, what="the two subscriptions as events")
        collecting.cancel()

    assert (first.recovered, first.was_recovering) == (False, False)
    assert (lost.recovered, lost.was_recovering) == (False, True)
    assert [(e.channel, e.recovered, e.was_recovering) for e in events] == [
        ("news", False, False),
        ("other", False, True),
    ]


async def test_a_resubscription_refused_while_the_broker_is_down_is_retried(
    feeds_server_factory: Any, private_redis_aof: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection drops while Redis is down, so the renewal is refused as
    ``unavailable``: the client tries again, from its position, until Redis is back."""
    caplog.set_level(logging.INFO, logger="sanic_feeds.client")
    server = feeds_server_factory(broker=private_redis_aof.url)
    proxy = _CuttableProxy(server.port)
    await proxy.start()
    events: list[Any] = []
    try:
        async with FeedsClient(proxy.ws_url, backoff_min_s=0.05, backoff_max_s=0.5) as client:
            await client.subscribe("orders")
            collecting = asyncio.create_task(_collect(client, events))
            for n in range(2):
                status, body = await publish_http(server.url, "orders", n)
                assert status == 200, body
            await wait_until(lambda: len(_offsets(events, "orders")) == 2, what="two messages")

            await asyncio.to_thread(private_redis_aof.stop)
            await wait_until(lambda: ready_is(server, 503), what="the server to lose Redis")
            assert proxy.cut() > 0
            await wait_until(
                lambda: any(
                    r.name == "sanic_feeds.client" and "unavailable" in r.getMessage()
                    for r in caplog.records
                ),
                timeout_s=15,
                what="the renewal to be refused as unavailable",
            )
            await asyncio.to_thread(private_redis_aof.start)
            await wait_until(lambda: ready_is(server, 200), timeout_s=30, what="Redis back")
            status, body = await publish_http(server.url, "orders", 2)
            assert status == 200, body
            await wait_until(
                lambda: len(_offsets(events, "orders")) >= 3,
                timeout_s=30,
                what="the message published once Redis was back",
            )
            collecting.cancel()
    finally:
        await proxy.close()

    assert _offsets(events, "orders") == [1, 2, 3]
    assert [e.data for e in events if isinstance(e, Publication)] == [0, 1, 2]
    renewed = [e for e in events if isinstance(e, Subscribed) and e.resumed]
    # The AOF kept the history: the retry asked with since/epoch and recovered.
    assert len(renewed) == 1 and renewed[0].recovered, renewed
    assert not any(isinstance(e, SubscriptionRefused) for e in events)


async def test_a_resubscription_refused_for_good_surfaces_and_is_not_retried(
    feeds_server_factory: Any, redis_url: str
) -> None:
    """The server comes back allowing one subscription per connection: the second
    channel's renewal is refused (``limit_exceeded``), and the application is told."""
    first = feeds_server_factory(broker=redis_url)
    events: list[Any] = []
    async with FeedsClient(first.ws_url, backoff_min_s=0.05, backoff_max_s=0.5) as client:
        await client.subscribe("kept")
        await client.subscribe("dropped")
        collecting = asyncio.create_task(_collect(client, events))
        await asyncio.to_thread(first.stop)
        feeds_server_factory(broker=redis_url, port=first.port, args=["--max-subscriptions", "1"])
        await wait_until(
            lambda: any(isinstance(e, SubscriptionRefused) for e in events),
            timeout_s=30,
            what="the refusal to reach the application",
        )
        status, body = await publish_http(first.url, "kept", "still here")
        assert status == 200, body
        await wait_until(lambda: _offsets(events, "kept"), what="a message on the kept channel")
        await asyncio.sleep(1.0)  # time for a retry loop to show, if there were one
        collecting.cancel()

    refused = [e for e in events if isinstance(e, SubscriptionRefused)]
    assert len(refused) == 1, refused
    assert refused[0].channel == "dropped" and refused[0].error_code == "limit_exceeded"
    renewed = [e for e in events if isinstance(e, Subscribed) and e.resumed]
    assert [e.channel for e in renewed] == ["kept"]


async def test_messages_recovered_by_subscribe_since_are_not_delivered_again_after_a_reconnect(
    feeds_server_factory: Any, redis_url: str
) -> None:
    """``subscribe(since=5)`` recovers 6..10, dispatched before ``subscribe`` returns; the
    position must not then be set back to 5, or the reconnect recovers 6..10 again."""
    server = feeds_server_factory(broker=redis_url)
    for n in range(1, 11):
        status, body = await publish_http(server.url, "ticks", n)
        assert status == 200, body
    epoch = body["epoch"]
    events: list[Any] = []
    async with FeedsClient(server.ws_url, backoff_min_s=0.05, backoff_max_s=0.5) as client:
        subscribed = await client.subscribe("ticks", since=StreamPosition(5, epoch))
        assert subscribed.recovered
        collecting = asyncio.create_task(_collect(client, events))
        await wait_until(lambda: len(_offsets(events, "ticks")) >= 5, what="the recovered ones")

        await _restart_and_wait_resubscribed(server, events)
        status, body = await publish_http(server.url, "ticks", 11)
        assert status == 200, body
        await wait_until(lambda: 11 in _offsets(events, "ticks"), what="the live message")
        await asyncio.sleep(0.3)  # duplicates, if any, would have arrived meanwhile
        collecting.cancel()

    assert _offsets(events, "ticks") == list(range(6, 12))
    renewed = [e for e in events if isinstance(e, Subscribed) and e.resumed]
    assert len(renewed) == 1 and renewed[0].recovered, renewed


def _publish_blocking(base_url: str, channel: str, data: Any) -> None:
    """POST /api/publish from the calling thread, blocking it (and its event loop)."""
    request = urllib.request.Request(
        f"{base_url}/api/publish",
        data=orjson.dumps({"channel": channel, "data": data}),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200


async def test_live_messages_right_after_a_fresh_subscribe_are_not_delivered_again(
    feeds_server_factory: Any, redis_url: str
) -> None:
    """The application's event loop is busy while the server answers ``subscribe`` and three
    messages follow: the client reads them all at once and dispatches them before
    ``subscribe`` returns. The position must count them, or the reconnect recovers them
    again."""
    server = feeds_server_factory(broker=redis_url)
    status, body = await publish_http(server.url, "live", "history")  # one epoch throughout
    assert status == 200, body
    events: list[Any] = []
    async with FeedsClient(server.ws_url, backoff_min_s=0.05, backoff_max_s=0.5) as client:
        subscribing = asyncio.create_task(client.subscribe("live"))
        for _ in range(20):  # a few turns of the loop put the command on the wire; the
            await asyncio.sleep(0)  # reply takes a round trip through Redis
        # Blocking calls on purpose: the client reads nothing meanwhile.
        time.sleep(0.3)  # noqa: ASYNC251 - the server subscribes the client
        for n in range(3):
            _publish_blocking(server.url, "live", n)
        time.sleep(0.3)  # noqa: ASYNC251 - the messages reach the client's socket
        subscribed = await subscribing
        assert (subscribed.offset, subscribed.recovered) == (1, False)
        collecting = asyncio.create_task(_collect(client, events))
        await wait_until(lambda: len(_offsets(events, "live")) >= 3, what="the live messages")

        await _restart_and_wait_resubscribed(server, events)
        status, body = await publish_http(server.url, "live", 3)
        assert status == 200, body
        await wait_until(lambda: 5 in _offsets(events, "live"), what="the message after it")
        await asyncio.sleep(0.3)  # duplicates, if any, would have arrived meanwhile
        collecting.cancel()

    assert _offsets(events, "live") == [2, 3, 4, 5]
    renewed = [e for e in events if isinstance(e, Subscribed) and e.resumed]
    assert len(renewed) == 1 and renewed[0].recovered, renewed


async def test_the_close_code_of_a_draining_server_is_reported_as_sent(
    feeds_server_factory: Any,
) -> None:
    """A SIGTERMed server closes with 1001 (going away); the client's iteration of the
    connection ends quietly on it, as on 1000, which is what was reported before."""
    server = feeds_server_factory()
    async with FeedsClient(server.ws_url, backoff_min_s=0.05, backoff_max_s=0.2) as client:
        await client.subscribe("news")
        assert client.last_close_code is None
        assert server.pid is not None
        os.kill(server.pid, signal.SIGTERM)
        await wait_until(
            lambda: client.last_close_code is not None, what="the connection's end noticed"
        )
        assert client.last_close_code == 1001
