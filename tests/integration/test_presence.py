"""Presence across instances on one Redis (docs/protocol.md, "Presence, join and leave").

Who is subscribed to a channel, seen the same from every instance (``/ws`` ``presence`` and
``GET /api/channels/<channel>``); ``join`` and ``leave`` agree with it; the entries of an
instance that crashed disappear within a bounded time, and those of an instance that was
only silent for a while come back with it.

The bound: an instance heartbeats every second (``BrokerOptions.heartbeat_interval_s``) and
is counted dead five intervals after its last heartbeat. ``serve`` has no option to change
either, so the crash test waits those few seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.feeds_server import FeedsServer
from tests.support.ws import open_feed, recv_event, wait_until

pytestmark = pytest.mark.integration

#: Five missed heartbeats of one second: an instance counts as dead after this.
DEAD_AFTER_S = 5.0


async def channel_info(server: FeedsServer, channel: str) -> dict[str, Any]:
    def get() -> Any:
        with urllib.request.urlopen(f"{server.url}/api/channels/{channel}", timeout=10) as reply:
            assert reply.status == 200
            return orjson.loads(reply.read())

    info: dict[str, Any] = await asyncio.to_thread(get)
    return info


class WsClient:
    """A ``/ws`` connection that keeps the events it reads past while waiting for a reply."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next_id = 0

    async def command(self, op: str, channel: str, **fields: Any) -> dict[str, Any]:
        self._next_id += 1
        command_id = self._next_id
        command = {"op": op, "channel": channel, "id": command_id, **fields}
        await self.ws.send(orjson.dumps(command).decode())
        while True:
            event = await recv_event(self.ws)
            if event.get("id") == command_id:
                return dict(event)
            self.events.append(event)

    async def subscribe(self, channel: str) -> str:
        """Subscribe; return this client's id, read from its own join event."""
        reply = await self.command("subscribe", channel)
        assert reply["type"] == "subscribed", reply
        join = await self.next_event("join", channel)
        client: str = join["client"]
        return client

    async def presence(self, channel: str) -> dict[str, Any]:
        reply = await self.command("presence", channel)
        assert reply["type"] == "presence" and reply["channel"] == channel, reply
        clients: dict[str, Any] = reply["clients"]
        return clients

    async def next_event(self, kind: str, channel: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The next ``kind`` event on ``channel``, skipping others (kept in ``events``)."""
        for index, event in enumerate(self.events):
            if event["type"] == kind and event.get("channel") == channel:
                return self.events.pop(index)
        deadline = time.monotonic() + timeout_s
        while True:
            event = await recv_event(self.ws, max(0.01, deadline - time.monotonic()))
            if event["type"] == kind and event.get("channel") == channel:
                return dict(event)
            self.events.append(event)


Connect = Callable[[FeedsServer], Awaitable[WsClient]]


@pytest.fixture
async def connect_ws() -> AsyncIterator[Connect]:
    opened: list[ClientConnection] = []

    async def open_ws(server: FeedsServer) -> WsClient:
        ws = await connect(f"{server.ws_url}/ws", open_timeout=10)
        opened.append(ws)
        return WsClient(ws)

    yield open_ws
    for ws in opened:
        try:
            await asyncio.wait_for(ws.close(), 5)
        except (TimeoutError, OSError):
            ws.transport.abort()


@pytest.fixture
def two_instances(feeds_server_factory: Any, redis_url: str) -> tuple[FeedsServer, FeedsServer]:
    return feeds_server_factory(broker=redis_url), feeds_server_factory(broker=redis_url)


async def test_presence_lists_the_clients_of_both_instances(
    two_instances: tuple[FeedsServer, FeedsServer], connect_ws: Connect
) -> None:
    one, two = two_instances
    on_one, on_two, also_on_two = [await connect_ws(s) for s in (one, two, two)]
    ids = {await on_one.subscribe("lobby"), await on_two.subscribe("lobby")}
    # A /feed client is present too.
    feed_client = await open_feed(two.ws_url, "lobby")
    feed_join = await recv_event(feed_client)
    assert feed_join["type"] == "join", feed_join
    ids.add(feed_join["client"])
    assert len(ids) == 3
    expected: dict[str, Any] = {client: {} for client in ids}
    for asker in (on_one, on_two, also_on_two):
        assert await asker.presence("lobby") == expected
    epochs = set()
    for server in (one, two):
        info = await channel_info(server, "lobby")
        epochs.add(info.pop("epoch"))
        assert info == {
            "channel": "lobby",
            "subscribers": 3,
            "presence": expected,
            "offset": 0,
        }
    # One epoch for the channel, the one its first subscription created.
    assert len(epochs) == 1 and "" not in epochs
    # Another channel is not affected.
    assert await on_one.presence("elsewhere") == {}
    assert (await channel_info(two, "elsewhere"))["subscribers"] == 0


async def test_channel_info_agrees_on_both_instances_after_publishing(
    two_instances: tuple[FeedsServer, FeedsServer], connect_ws: Connect
) -> None:
    one, two = two_instances
    client = await connect_ws(one)
    client_id = await client.subscribe("news")
    for n in range(3):
        ack = await client.command("publish", "news", data=n)
        assert ack == {"type": "ack", "offset": n + 1, "epoch": ack["epoch"], "id": ack["id"]}
    infos = [await channel_info(server, "news") for server in (one, two)]
    assert infos[0] == infos[1]
    assert infos[0]["presence"] == {client_id: {}}
    assert infos[0]["subscribers"] == 1
    assert infos[0]["offset"] == 3


async def test_join_and_leave_cross_instances_and_agree_with_presence(
    two_instances: tuple[FeedsServer, FeedsServer], connect_ws: Connect
) -> None:
    one, two = two_instances
    watcher = await connect_ws(one)
    watcher_id = await watcher.subscribe("room")
    guest = await connect_ws(two)
    guest_id = await guest.subscribe("room")
    join = await watcher.next_event("join", "room")
    assert join == {"type": "join", "channel": "room", "client": guest_id, "info": {}}
    # By the time a join is seen, presence lists the newcomer, on every instance.
    assert await watcher.presence("room") == {watcher_id: {}, guest_id: {}}
    assert (await channel_info(two, "room"))["presence"] == {watcher_id: {}, guest_id: {}}

    await guest.command("unsubscribe", "room")
    leave = await watcher.next_event("leave", "room")
    assert leave == {"type": "leave", "channel": "room", "client": guest_id}
    # By the time a leave is seen, presence no longer lists it.
    assert await watcher.presence("room") == {watcher_id: {}}
    assert (await channel_info(two, "room"))["presence"] == {watcher_id: {}}

    # A connection that closes leaves too.
    assert await guest.subscribe("room") == guest_id
    assert (await watcher.next_event("join", "room"))["client"] == guest_id
    await guest.ws.close()
    assert (await watcher.next_event("leave", "room"))["client"] == guest_id
    assert await watcher.presence("room") == {watcher_id: {}}


async def test_a_drained_instance_leaves_at_once(
    two_instances: tuple[FeedsServer, FeedsServer], connect_ws: Connect
) -> None:
    one, two = two_instances
    watcher = await connect_ws(one)
    watcher_id = await watcher.subscribe("room")
    leaving = [await connect_ws(two) for _ in range(2)]
    leaving_ids = {await client.subscribe("room") for client in leaving}
    for _ in leaving:
        await watcher.next_event("join", "room")
    assert set(await watcher.presence("room")) == {watcher_id, *leaving_ids}
    two.stop()  # SIGTERM: drains, every client leaves its channels
    left = {(await watcher.next_event("leave", "room"))["client"] for _ in leaving}
    assert left == leaving_ids
    assert await watcher.presence("room") == {watcher_id: {}}


async def test_a_crashed_instance_leaves_presence_within_the_bound(
    two_instances: tuple[FeedsServer, FeedsServer], connect_ws: Connect
) -> None:
    one, two = two_instances
    survivor = await connect_ws(one)
    survivor_id = await survivor.subscribe("room")
    await survivor.subscribe("hall")
    victims = [await connect_ws(two) for _ in range(2)]
    victim_ids = {await victim.subscribe("room") for victim in victims}
    await victims[0].subscribe("hall")
    assert set(await survivor.presence("room")) == {survivor_id, *victim_ids}
    assert len(await survivor.presence("hall")) == 2

    two.kill()  # SIGKILL: nobody removes its entries
    killed_at = time.monotonic()
    deadline = killed_at + DEAD_AFTER_S + 3
    while set(await survivor.presence("room")) != {survivor_id}:
        assert time.monotonic() < deadline, "a crashed instance's clients stayed present"
        await asyncio.sleep(0.1)
    gone_after_s = time.monotonic() - killed_at
    assert gone_after_s < DEAD_AFTER_S + 3
    assert await survivor.presence("hall") == {survivor_id: {}}
    info = await channel_info(one, "room")
    assert (info["subscribers"], info["presence"]) == (1, {survivor_id: {}})


async def test_an_instance_silent_for_a_while_is_present_again_when_it_comes_back(
    two_instances: tuple[FeedsServer, FeedsServer], connect_ws: Connect
) -> None:
    """An instance that stops heartbeating for longer than the bound (stopped, overloaded,
    cut off from Redis) but then carries on with its clients still connected: while it is
    silent its clients are not listed, once it is back they are again."""
    one, two = two_instances
    asker = await connect_ws(one)
    paused = await connect_ws(two)
    paused_id = await paused.subscribe("room")
    assert await asker.presence("room") == {paused_id: {}}

    assert two.pid is not None
    os.killpg(two.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + DEAD_AFTER_S + 3
        # Read meanwhile from the other instance, which sees it as dead.
        while await asker.presence("room"):
            assert time.monotonic() < deadline, "a silent instance's clients stayed present"
            await asyncio.sleep(0.1)
    finally:
        os.killpg(two.pid, signal.SIGCONT)
    # Its client never left: once the instance heartbeats again, it is listed again.
    await wait_until(
        lambda: _present(asker, "room", paused_id), what="the resumed instance's client listed"
    )
    assert await asker.presence("room") == {paused_id: {}}
    assert (await channel_info(one, "room"))["presence"] == {paused_id: {}}


async def _present(client: WsClient, channel: str, client_id: str) -> bool:
    return client_id in await client.presence(channel)
