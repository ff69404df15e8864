"""``GET /ws``, command by command (docs/protocol.md, "Commands on /ws").

Every command with the exact reply shape the protocol gives it, recovery with
``since``/``epoch``, and malformed commands: each answered by an ``error`` event echoing
its ``id``, on a connection that stays open and keeps working.

Each test runs twice: in-process, against a ``Node`` on the memory broker driven through a
fake socket (milliseconds, no process), and against a real server process on the
session's Redis, started once for the module with the same small limits. Tests that need
other settings or a real socket say so.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

import orjson
import pytest
from websockets.asyncio.client import connect

from sanic_feeds.server.node import Node
from sanic_feeds.settings import Settings
from tests.support.fakes import InProcessSession
from tests.support.feeds_server import FeedsServer
from tests.support.ws import close_code, publish_http, wait_until

HISTORY_SIZE = 50
RECOVERY_MAX = 20
MAX_SUBSCRIPTIONS = 3
MAX_MESSAGE_BYTES = 4096
SERVER_ARGS = (
    "--history-size", str(HISTORY_SIZE),
    "--recovery-max", str(RECOVERY_MAX),
    "--max-subscriptions", str(MAX_SUBSCRIPTIONS),
    "--max-message-bytes", str(MAX_MESSAGE_BYTES),
    "--rate-limit", "0",
)  # fmt: skip
SETTINGS = Settings(
    history_size=HISTORY_SIZE,
    recovery_max=RECOVERY_MAX,
    max_subscriptions=MAX_SUBSCRIPTIONS,
    max_message_bytes=MAX_MESSAGE_BYTES,
    rate_limit=0,
)
MESSAGE_KEYS = {"type", "channel", "offset", "epoch", "data", "client", "ts"}
IN_PROCESS = "in-process"


class Socket(Protocol):
    """What a test client needs of its connection: ``websockets``' ``ClientConnection``,
    or an ``InProcessSession``."""

    async def send(self, message: str | bytes) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self) -> None: ...


class Target(Protocol):
    """Where the tests connect and publish: a Node in-process, or a real server."""

    async def connect(self) -> Client: ...

    async def publish(self, channel: str, data: Any) -> dict[str, Any]:
        """Publish as the backend does (``POST /api/publish``); ``{"offset", "epoch"}``."""


@pytest.fixture(scope="module")
def redis_feeds(redis_server: Any) -> Iterator[FeedsServer]:
    """The module's real server, on the session's Redis."""
    feeds = FeedsServer(redis_server.url, args=SERVER_ARGS)
    try:
        feeds.start()
        yield feeds
        assert feeds.running, f"the server died during the tests:\n{feeds.log_tail()}"
        feeds.stop()
    finally:
        feeds.close()


@pytest.fixture(
    scope="module",
    params=[IN_PROCESS, pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.integration])],
)
def server(request: pytest.FixtureRequest) -> FeedsServer | None:
    """The module's real server on Redis, or None for the in-process runs."""
    if request.param == IN_PROCESS:
        return None
    feeds: FeedsServer = request.getfixturevalue("redis_feeds")
    return feeds


class ServerTarget:
    def __init__(self, feeds: FeedsServer, opened: list[Socket]) -> None:
        self.feeds = feeds
        self._opened = opened

    async def connect(self) -> Client:
        ws = await connect(f"{self.feeds.ws_url}/ws", open_timeout=10, max_size=2**22)
        self._opened.append(ws)
        return Client(ws)

    async def publish(self, channel: str, data: Any) -> dict[str, Any]:
        status, body = await publish_http(self.feeds.url, channel, data)
        assert status == 200, body
        return dict(body)


class NodeTarget:
    def __init__(self, node: Node, opened: list[Socket]) -> None:
        self.node = node
        self._opened = opened

    async def connect(self) -> Client:
        session = InProcessSession(self.node)
        self._opened.append(session)
        return Client(session)

    async def publish(self, channel: str, data: Any) -> dict[str, Any]:
        position = await self.node.publish(channel, data)
        return {"offset": position.offset, "epoch": position.epoch}


@pytest.fixture
async def target(server: FeedsServer | None) -> AsyncIterator[Target]:
    """The test's target; every connection it opened is closed at teardown."""
    opened: list[Socket] = []
    node = None
    if server is None:
        node = Node(SETTINGS)
        await node.start()
        yield NodeTarget(node, opened)
    else:
        yield ServerTarget(server, opened)
    for ws in opened:
        try:
            await asyncio.wait_for(ws.close(), 5)
        except (TimeoutError, OSError):
            if hasattr(ws, "transport"):
                ws.transport.abort()
    if node is not None:
        node.drain()
        await node.stop()


def unique(name: str) -> str:
    """A channel of the test's own: the module's server outlives every test."""
    return f"{name}-{secrets.token_hex(4)}"


class Client:
    """A ``/ws`` connection: send commands, read replies by ``id`` and events by type.

    Events read while looking for something else are kept, in order, for later reads.
    """

    def __init__(self, ws: Socket) -> None:
        self.ws = ws
        self.backlog: list[dict[str, Any]] = []
        #: The ``subscribed`` reply of each channel subscribed to, by channel.
        self.subscribed: dict[str, dict[str, Any]] = {}

    async def send(self, command: Any) -> None:
        await self.ws.send(command if isinstance(command, str) else orjson.dumps(command).decode())

    async def _read(self, timeout_s: float) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), timeout_s)
        assert isinstance(frame, str), f"a binary frame from the server: {frame!r}"
        event = orjson.loads(frame)
        assert isinstance(event, dict), event
        return event

    async def next_matching(
        self, match: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
    ) -> dict[str, Any]:
        for index, event in enumerate(self.backlog):
            if match(event):
                return self.backlog.pop(index)
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"nothing matching arrived; meanwhile: {self.backlog}")
            event = await self._read(remaining)
            if match(event):
                return event
            self.backlog.append(event)

    async def reply(self, command_id: Any) -> dict[str, Any]:
        """The reply to the command ``command_id`` (never a message or join/leave)."""
        return await self.next_matching(
            lambda e: e.get("id") == command_id and e["type"] not in ("message", "join", "leave")
        )

    async def command(self, **fields: Any) -> dict[str, Any]:
        await self.send(fields)
        return await self.reply(fields.get("id"))

    async def event(self, kind: str, channel: str) -> dict[str, Any]:
        return await self.next_matching(lambda e: e["type"] == kind and e.get("channel") == channel)

    async def messages(self, channel: str, count: int) -> list[dict[str, Any]]:
        return [await self.event("message", channel) for _ in range(count)]

    async def next_event(self, timeout_s: float = 10.0) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        return await self._read(timeout_s)

    async def subscribe(self, channel: str, **fields: Any) -> dict[str, Any]:
        reply = await self.command(op="subscribe", channel=channel, id=f"sub-{channel}", **fields)
        assert reply["type"] == "subscribed", reply
        self.subscribed[channel] = reply
        return reply

    async def own_id(self, channel: str) -> str:
        """This client's id, as its ``subscribed`` on ``channel`` said, once its own join
        came back (others' joins may come first: they are kept for later reads)."""
        me: str = self.subscribed[channel]["client"]
        await self.next_matching(
            lambda e: e["type"] == "join" and e.get("channel") == channel and e["client"] == me
        )
        return me

    async def assert_alive(self) -> None:
        """The connection still answers commands, and still publishes and delivers."""
        probe_id = f"probe-{secrets.token_hex(3)}"
        assert await self.command(op="ping", id=probe_id) == {"type": "pong", "id": probe_id}
        channel = unique("alive")
        await self.subscribe(channel)
        ack = await self.command(op="publish", channel=channel, data="still here", id=probe_id)
        assert ack == {"type": "ack", "offset": 1, "epoch": ack["epoch"], "id": probe_id}
        [message] = await self.messages(channel, 1)
        assert message["data"] == "still here"
        assert (await self.command(op="unsubscribe", channel=channel, id=probe_id))["type"] == (
            "unsubscribed"
        )


async def publish_n(target: Target, channel: str, count: int) -> list[dict[str, Any]]:
    return [await target.publish(channel, {"n": n}) for n in range(count)]


# -- ping


async def test_ping_is_answered_with_pong_echoing_the_id(target: Target) -> None:
    client = await target.connect()
    assert await client.command(op="ping", id=6) == {"type": "pong", "id": 6}
    assert await client.command(op="ping", id="six") == {"type": "pong", "id": "six"}
    # Without an id the reply has none.
    await client.send({"op": "ping"})
    assert await client.next_event() == {"type": "pong"}


# -- subscribe


async def test_subscribe_to_a_new_channel(target: Target) -> None:
    channel = unique("fresh")
    client = await target.connect()
    reply = await client.command(op="subscribe", channel=channel, id=1)
    # The channel's epoch exists from its first subscription, so that offset 0 can recover.
    assert isinstance(reply["epoch"], str) and reply["epoch"]
    assert reply == {
        "type": "subscribed",
        "channel": channel,
        "offset": 0,
        "epoch": reply["epoch"],
        "recovered": False,
        "client": reply["client"],
        "id": 1,
    }
    # ``client`` is this connection's own id: its own join says the same.
    join = await client.event("join", channel)
    assert join == {"type": "join", "channel": channel, "client": reply["client"], "info": {}}
    assert isinstance(join["client"], str) and len(join["client"]) == 16


async def test_subscribe_to_a_channel_with_history_starts_from_now(target: Target) -> None:
    channel = unique("busy")
    published = await publish_n(target, channel, 3)
    epoch = published[0]["epoch"]
    client = await target.connect()
    reply = await client.command(op="subscribe", channel=channel, id="s")
    assert reply == {
        "type": "subscribed",
        "channel": channel,
        "offset": 3,
        "epoch": epoch,
        "recovered": False,
        "client": reply["client"],
        "id": "s",
    }
    assert await target.publish(channel, {"title": "hello"}) == {"offset": 4, "epoch": epoch}
    # Nothing from before the subscription: the first message is the live one.
    [message] = await client.messages(channel, 1)
    assert set(message) == MESSAGE_KEYS
    assert message["type"] == "message"
    assert (message["channel"], message["offset"], message["epoch"]) == (channel, 4, epoch)
    assert message["data"] == {"title": "hello"}
    assert message["client"] is None  # published through the HTTP API
    assert abs(message["ts"] - time.time() * 1000) < 60_000


async def test_subscribe_twice_to_one_channel_is_refused(target: Target) -> None:
    channel = unique("twice")
    client = await target.connect()
    await client.subscribe(channel)
    error = await client.command(op="subscribe", channel=channel, id=2)
    assert error["type"] == "error" and error["code"] == "bad_request", error
    # Still subscribed exactly once: one message arrives once.
    await client.command(op="publish", channel=channel, data="once", id=3)
    [message] = await client.messages(channel, 1)
    assert message["data"] == "once"
    assert await client.command(op="ping", id=4) == {"type": "pong", "id": 4}
    assert [e for e in client.backlog if e["type"] == "message"] == []


async def test_subscriptions_per_connection_are_limited(target: Target) -> None:
    client = await target.connect()
    channels = [unique(f"many{n}") for n in range(MAX_SUBSCRIPTIONS + 1)]
    for channel in channels[:MAX_SUBSCRIPTIONS]:
        await client.subscribe(channel)
    error = await client.command(op="subscribe", channel=channels[-1], id="over")
    assert error["type"] == "error" and error["code"] == "limit_exceeded", error
    assert error["id"] == "over"
    await client.command(op="unsubscribe", channel=channels[0], id="u")
    assert (await client.subscribe(channels[-1]))["channel"] == channels[-1]


# -- recovery


async def test_subscribe_with_since_and_epoch_recovers_what_was_missed(target: Target) -> None:
    channel = unique("recover")
    first = await target.connect()
    await first.subscribe(channel)
    epoch = (await publish_n(target, channel, 2))[0]["epoch"]
    seen = await first.messages(channel, 2)
    await first.ws.close()
    await publish_n(target, channel, 5)  # offsets 3..7, missed
    again = await target.connect()
    since = seen[-1]["offset"]
    reply = await again.command(op="subscribe", channel=channel, since=since, epoch=epoch, id=1)
    assert reply == {
        "type": "subscribed",
        "channel": channel,
        "offset": 7,
        "epoch": epoch,
        "recovered": True,
        "client": reply["client"],
        "id": 1,
    }
    await target.publish(channel, "live")
    messages = await again.messages(channel, 6)
    assert [m["offset"] for m in messages] == [3, 4, 5, 6, 7, 8]
    assert [m["data"] for m in messages] == [{"n": n} for n in range(5)] + ["live"]
    assert all(set(m) == MESSAGE_KEYS and m["epoch"] == epoch for m in messages)


async def test_a_subscriber_of_an_empty_channel_recovers_from_offset_0(target: Target) -> None:
    channel = unique("empty")
    first = await target.connect()
    greeted = await first.subscribe(channel)
    assert greeted["offset"] == 0 and greeted["epoch"]
    await first.ws.close()
    bodies = await publish_n(target, channel, 5)
    assert {b["epoch"] for b in bodies} == {greeted["epoch"]}
    again = await target.connect()
    reply = await again.subscribe(channel, since=0, epoch=greeted["epoch"])
    assert (reply["offset"], reply["epoch"], reply["recovered"]) == (5, greeted["epoch"], True)
    await target.publish(channel, "live")
    messages = await again.messages(channel, 6)
    assert [m["offset"] for m in messages] == [1, 2, 3, 4, 5, 6]
    assert [m["data"] for m in messages] == [{"n": n} for n in range(5)] + ["live"]


async def test_recovered_messages_come_right_after_subscribed(target: Target) -> None:
    channel = unique("order")
    epoch = (await publish_n(target, channel, 4))[0]["epoch"]
    client = await target.connect()
    await client.send({"op": "subscribe", "channel": channel, "since": 1, "epoch": epoch, "id": 9})
    events = [await client.next_event() for _ in range(4)]
    assert [e["type"] for e in events] == ["subscribed", "message", "message", "message"]
    assert events[0]["recovered"] is True
    assert [e["offset"] for e in events[1:]] == [2, 3, 4]


async def test_subscribe_with_since_up_to_date_recovers_nothing(target: Target) -> None:
    channel = unique("uptodate")
    epoch = (await publish_n(target, channel, 3))[0]["epoch"]
    client = await target.connect()
    reply = await client.subscribe(channel, since=3, epoch=epoch)
    assert (reply["offset"], reply["epoch"], reply["recovered"]) == (3, epoch, True)
    await target.publish(channel, "next")
    [message] = await client.messages(channel, 1)
    assert (message["offset"], message["data"]) == (4, "next")


@pytest.mark.parametrize(
    "case",
    ["other epoch", "no epoch", "since ahead", "too many missed"],
)
async def test_subscribe_that_cannot_recover_says_so_and_starts_from_now(
    target: Target, case: str
) -> None:
    channel = unique("norecover")
    count = RECOVERY_MAX + 5 if case == "too many missed" else 5
    epoch = (await publish_n(target, channel, count))[0]["epoch"]
    since, claimed_epoch = {
        "other epoch": (2, "not-" + epoch),
        "no epoch": (2, None),
        "since ahead": (count + 10, epoch),
        "too many missed": (count - RECOVERY_MAX - 1, epoch),
    }[case]
    client = await target.connect()
    fields: dict[str, Any] = {"since": since}
    if claimed_epoch is not None:
        fields["epoch"] = claimed_epoch
    reply = await client.subscribe(channel, **fields)
    assert (reply["offset"], reply["epoch"], reply["recovered"]) == (count, epoch, False)
    # Never partial: the next message is the live one.
    await target.publish(channel, "live")
    [message] = await client.messages(channel, 1)
    assert (message["offset"], message["data"]) == (count + 1, "live")


async def test_recovery_of_exactly_recovery_max_messages(target: Target) -> None:
    channel = unique("edge")
    epoch = (await publish_n(target, channel, RECOVERY_MAX + 1))[0]["epoch"]
    client = await target.connect()
    reply = await client.subscribe(channel, since=1, epoch=epoch)
    assert reply["recovered"] is True
    messages = await client.messages(channel, RECOVERY_MAX)
    assert [m["offset"] for m in messages] == list(range(2, RECOVERY_MAX + 2))


# -- unsubscribe


async def test_unsubscribe_stops_only_that_channel(target: Target) -> None:
    gone, kept = unique("gone"), unique("kept")
    client = await target.connect()
    await client.subscribe(gone)
    await client.subscribe(kept)
    reply = await client.command(op="unsubscribe", channel=gone, id=2)
    assert reply == {"type": "unsubscribed", "channel": gone, "id": 2}
    await target.publish(gone, "not for me")
    await target.publish(kept, "for me")
    # One broker connection, one order: had `gone` been delivered, it came first.
    [message] = await client.messages(kept, 1)
    assert message["data"] == "for me"
    assert [e for e in client.backlog if e.get("channel") == gone and e["type"] == "message"] == []


async def test_unsubscribe_from_a_channel_not_subscribed_is_refused(target: Target) -> None:
    client = await target.connect()
    error = await client.command(op="unsubscribe", channel=unique("never"), id="u1")
    assert error["type"] == "error" and error["code"] == "bad_request" and error["id"] == "u1"
    await client.assert_alive()


async def test_resubscribe_after_unsubscribe(target: Target) -> None:
    channel = unique("back")
    client = await target.connect()
    await client.subscribe(channel)
    await client.command(op="unsubscribe", channel=channel, id="u")
    await client.subscribe(channel)
    await target.publish(channel, "back again")
    [message] = await client.messages(channel, 1)
    assert message["data"] == "back again"


# -- publish


async def test_publish_is_acked_with_its_offset_and_reaches_subscribers(target: Target) -> None:
    channel = unique("pub")
    listener = await target.connect()
    await listener.subscribe(channel)
    publisher = await target.connect()
    await publisher.subscribe(channel)
    publisher_id = await publisher.own_id(channel)
    acks = [
        await publisher.command(op="publish", channel=channel, data={"n": n}, id=100 + n)
        for n in range(3)
    ]
    epoch = acks[0]["epoch"]
    assert acks == [
        {"type": "ack", "offset": n + 1, "epoch": epoch, "id": 100 + n} for n in range(3)
    ]
    for client in (listener, publisher):
        messages = await client.messages(channel, 3)
        assert [m["offset"] for m in messages] == [1, 2, 3]
        assert {m["epoch"] for m in messages} == {epoch}
        assert [m["data"] for m in messages] == [{"n": n} for n in range(3)]
        assert {m["client"] for m in messages} == {publisher_id}
        assert all(set(m) == MESSAGE_KEYS for m in messages)
    info = await target.publish(channel, "via http")
    assert info["offset"] == 4
    assert len({m["epoch"] for m in messages} | {info["epoch"]}) == 1


async def test_publish_without_subscribing(target: Target) -> None:
    channel = unique("blind")
    listener = await target.connect()
    await listener.subscribe(channel)
    publisher = await target.connect()
    ack = await publisher.command(op="publish", channel=channel, data="hi", id=1)
    assert ack == {"type": "ack", "offset": 1, "epoch": ack["epoch"], "id": 1}
    [message] = await listener.messages(channel, 1)
    assert message["data"] == "hi"
    # The publisher is not subscribed: it gets its ack and nothing else.
    assert await publisher.command(op="ping", id=2) == {"type": "pong", "id": 2}
    assert publisher.backlog == []


@pytest.mark.parametrize("data", [None, 0, "text", "", [1, {"a": None}], {"nested": {"x": [1]}}])
async def test_publish_carries_any_json_value(target: Target, data: Any) -> None:
    channel = unique("json")
    client = await target.connect()
    await client.subscribe(channel)
    assert (await client.command(op="publish", channel=channel, data=data, id=1))["type"] == "ack"
    [message] = await client.messages(channel, 1)
    assert message["data"] == data


@pytest.mark.redis
@pytest.mark.integration
async def test_publish_too_large_a_frame_closes_1009(redis_feeds: FeedsServer) -> None:
    # The frame size limit is the socket layer's: only a real server has one.
    opened: list[Socket] = []
    target = ServerTarget(redis_feeds, opened)
    client = await target.connect()
    await client.send({"op": "publish", "channel": "big", "data": "x" * MAX_MESSAGE_BYTES, "id": 1})
    assert await close_code(client.ws) == 1009  # type: ignore[arg-type]
    await (await target.connect()).assert_alive()
    for ws in opened:
        await ws.close()


async def test_publish_over_the_rate_limit_is_refused_with_the_id() -> None:
    # (What happens to a client that keeps going, close 1008, is in test_limits.py.)
    node = Node(SETTINGS.replace(rate_limit=2, rate_burst=2))
    await node.start()
    target = NodeTarget(node, [])
    channel = unique("rate")
    client = await target.connect()
    replies = [await client.command(op="publish", channel=channel, data=n, id=n) for n in range(3)]
    acks = [(r["type"], r["offset"], r["id"]) for r in replies[:2]]
    assert acks == [("ack", 1, 0), ("ack", 2, 1)]
    assert (replies[2]["type"], replies[2]["code"], replies[2]["id"]) == (
        "error",
        "rate_limited",
        2,
    )
    # Refused, not closed: other commands still work, and publishing again once the rate
    # allows it is accepted; the refused message was not published.
    assert await client.command(op="ping", id="p") == {"type": "pong", "id": "p"}
    await asyncio.sleep(0.6)
    ack = await client.command(op="publish", channel=channel, data="later", id="later")
    assert ack == {"type": "ack", "offset": 3, "epoch": replies[0]["epoch"], "id": "later"}
    await client.ws.close()
    await node.stop()


# -- presence


async def test_presence_lists_every_subscriber_of_the_channel(target: Target) -> None:
    channel = unique("who")
    asker = await target.connect()
    empty = await asker.command(op="presence", channel=channel, id=4)
    assert empty == {"type": "presence", "channel": channel, "clients": {}, "id": 4}
    one, two = await target.connect(), await target.connect()
    await one.subscribe(channel)
    one_id = await one.own_id(channel)
    await two.subscribe(channel)
    two_id = (await one.event("join", channel))["client"]
    assert one_id != two_id
    reply = await asker.command(op="presence", channel=channel, id=5)
    assert reply == {
        "type": "presence",
        "channel": channel,
        "clients": {one_id: {}, two_id: {}},
        "id": 5,
    }
    await one.command(op="unsubscribe", channel=channel, id="u")
    assert (await asker.command(op="presence", channel=channel, id=6))["clients"] == {two_id: {}}
    await two.ws.close()

    async def emptied() -> bool:
        reply = await asker.command(op="presence", channel=channel, id="poll")
        return bool(reply["clients"] == {})

    await wait_until(emptied, what="presence empty once the last subscriber closed")


async def test_join_and_leave_events(target: Target) -> None:
    channel = unique("room")
    watcher = await target.connect()
    await watcher.subscribe(channel)
    await watcher.own_id(channel)
    guest = await target.connect()
    await guest.subscribe(channel)
    guest_id = await guest.own_id(channel)
    join = await watcher.event("join", channel)
    assert join == {"type": "join", "channel": channel, "client": guest_id, "info": {}}
    await guest.command(op="unsubscribe", channel=channel, id=1)
    leave = await watcher.event("leave", channel)
    assert leave == {"type": "leave", "channel": channel, "client": guest_id}
    # A connection that closes leaves every channel it was in.
    await guest.subscribe(channel)
    assert (await watcher.event("join", channel))["client"] == guest_id
    await guest.ws.close()
    assert (await watcher.event("leave", channel))["client"] == guest_id


# -- history


async def test_history_newest_when_since_is_absent(target: Target) -> None:
    channel = unique("hist")
    client = await target.connect()
    await client.subscribe(channel)
    for n in range(10):
        await client.command(op="publish", channel=channel, data=n, id=f"p{n}")
    delivered = await client.messages(channel, 10)
    epoch = delivered[0]["epoch"]
    reply = await client.command(op="history", channel=channel, limit=3, id=5)
    assert set(reply) == {"type", "channel", "messages", "offset", "epoch", "id"}
    assert (reply["type"], reply["channel"], reply["offset"], reply["epoch"], reply["id"]) == (
        "history",
        channel,
        10,
        epoch,
        5,
    )
    # Messages in history are the message events that were delivered, exactly.
    assert reply["messages"] == delivered[7:]
    everything = await client.command(op="history", channel=channel, id=6)
    assert everything["messages"] == delivered


async def test_history_since_an_offset_returns_the_oldest_after_it(target: Target) -> None:
    channel = unique("since")
    await publish_n(target, channel, 10)
    client = await target.connect()
    reply = await client.command(op="history", channel=channel, since=4, limit=3, id=1)
    assert [m["offset"] for m in reply["messages"]] == [5, 6, 7]
    assert [m["data"] for m in reply["messages"]] == [{"n": 4}, {"n": 5}, {"n": 6}]
    assert reply["offset"] == 10
    rest = await client.command(op="history", channel=channel, since=4, id=2)
    assert [m["offset"] for m in rest["messages"]] == [5, 6, 7, 8, 9, 10]
    none = await client.command(op="history", channel=channel, since=10, id=3)
    assert none["messages"] == [] and none["offset"] == 10


async def test_history_is_bounded_by_history_size(target: Target) -> None:
    channel = unique("bounded")
    client = await target.connect()
    total = HISTORY_SIZE + 10
    for n in range(total):
        await client.send({"op": "publish", "channel": channel, "data": n, "id": n})
    for n in range(total):
        assert (await client.reply(n))["type"] == "ack"
    reply = await client.command(op="history", channel=channel, limit=1000, id="h")
    assert [m["offset"] for m in reply["messages"]] == list(range(11, total + 1))
    assert reply["offset"] == total


async def test_history_of_an_empty_channel(target: Target) -> None:
    channel = unique("void")
    client = await target.connect()
    reply = await client.command(op="history", channel=channel, id=1)
    assert isinstance(reply["epoch"], str) and reply["epoch"]
    assert reply == {
        "type": "history",
        "channel": channel,
        "messages": [],
        "offset": 0,
        "epoch": reply["epoch"],
        "id": 1,
    }
    # The epoch of an empty channel is the one its first publish gets and subscribers see.
    ack = await client.command(op="publish", channel=channel, data="first", id=2)
    assert ack == {"type": "ack", "offset": 1, "epoch": reply["epoch"], "id": 2}
    assert (await client.subscribe(channel))["epoch"] == reply["epoch"]


# -- malformed commands

MALFORMED: list[tuple[str, str | dict[str, Any], str, Any]] = [
    # (case, frame, expected error code, expected echoed id)
    ("not json", "{op: subscribe", "bad_request", None),
    ("empty frame", "", "bad_request", None),
    ("json array", "[1, 2]", "bad_request", None),
    ("json string", '"ping"', "bad_request", None),
    ("json null", "null", "bad_request", None),
    ("no op", {"id": 1}, "bad_request", 1),
    ("unknown op", {"op": "shout", "channel": "c", "id": 2}, "bad_request", 2),
    ("op not a string", {"op": 5, "id": 3}, "bad_request", 3),
    ("op in another case", {"op": "PING", "id": 4}, "bad_request", 4),
    ("missing channel", {"op": "subscribe", "id": 5}, "bad_channel", 5),
    ("empty channel", {"op": "subscribe", "channel": "", "id": 6}, "bad_channel", 6),
    ("bad channel", {"op": "subscribe", "channel": "no spaces", "id": 7}, "bad_channel", 7),
    ("channel too long", {"op": "subscribe", "channel": "c" * 201, "id": 8}, "bad_channel", 8),
    ("channel braces", {"op": "history", "channel": "a{b}", "id": 9}, "bad_channel", 9),
    ("channel not str", {"op": "publish", "channel": 5, "data": 1, "id": 10}, "bad_channel", 10),
    ("channel list", {"op": "presence", "channel": ["c"], "id": 11}, "bad_channel", 11),
    ("publish no data", {"op": "publish", "channel": "c", "id": 12}, "bad_request", 12),
    ("since string",
     {"op": "subscribe", "channel": "c", "since": "3", "id": 13}, "bad_request", 13),
    ("since negative", {"op": "history", "channel": "c", "since": -1, "id": 14}, "bad_request", 14),
    ("since float", {"op": "history", "channel": "c", "since": 1.5, "id": 15}, "bad_request", 15),
    ("since bool", {"op": "subscribe", "channel": "c", "since": True, "id": 16}, "bad_request", 16),
    ("epoch number",
     {"op": "subscribe", "channel": "c", "since": 1, "epoch": 7, "id": 17}, "bad_request", 17),
    ("limit zero", {"op": "history", "channel": "c", "limit": 0, "id": 18}, "bad_request", 18),
    ("limit huge", {"op": "history", "channel": "c", "limit": 2**60, "id": 19}, "bad_request", 19),
    ("limit string", {"op": "history", "channel": "c", "limit": "5", "id": 20}, "bad_request", 20),
    ("string id", {"op": "shout", "id": "abc"}, "bad_request", "abc"),
    ("id object", {"op": "ping", "id": {"n": 1}}, "bad_request", ...),
]  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "code", "command_id"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
async def test_a_malformed_command_gets_an_error_and_the_connection_stays(
    target: Target, frame: Any, code: str, command_id: Any
) -> None:
    client = await target.connect()
    await client.send(frame)
    error = await client.next_event()
    assert error["type"] == "error", error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    if command_id is not ...:
        assert error.get("id") == command_id, error
    if command_id is None:
        assert "id" not in error, error
    await client.assert_alive()


async def test_malformed_commands_do_not_disturb_subscriptions(target: Target) -> None:
    channel = unique("steady")
    client = await target.connect()
    await client.subscribe(channel)
    for _, frame, _, _ in MALFORMED:
        await client.send(frame)
    # Commands are answered in order: once the pong is in, every error is too.
    assert await client.command(op="ping", id="barrier") == {"type": "pong", "id": "barrier"}
    await target.publish(channel, "through")
    [message] = await client.messages(channel, 1)
    assert message["data"] == "through"
    errors = [e for e in client.backlog if e["type"] == "error"]
    assert len(errors) == len(MALFORMED)
    assert [e["code"] for e in errors] == [case[2] for case in MALFORMED]


async def test_a_binary_frame_closes_the_connection_1003(target: Target) -> None:
    # docs/protocol.md, "Limits": binary frames on a text protocol are refused with close 1003.
    client = await target.connect()
    await client.ws.send(b'{"op": "ping", "id": 1}')
    assert await close_code(client.ws) == 1003
    await (await target.connect()).assert_alive()
