"""One test per row of the limits table (docs/protocol.md, "Limits"), against a real server
on Redis.

Each limit is set small on the command line. Every test also checks the promise
that hitting a limit "never crashes the instance and never affects other clients": a
bystander on the same instance and channel still receives a message published after the
violation, and the instance still answers ``/health``.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.ws import (
    close_code,
    open_feed,
    publish_http,
    recv_event,
    recv_messages,
    track,
    wait_until,
)

pytestmark = pytest.mark.integration

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


async def ws_connect(url: str, **kwargs: Any) -> ClientConnection:
    ws = await connect(url, open_timeout=10, **kwargs)
    track(ws)
    return ws


async def http_get(url: str) -> tuple[int, Any]:
    def get() -> tuple[int, Any]:
        try:
            with _no_proxy.open(url, timeout=10) as reply:
                return reply.status, orjson.loads(reply.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, orjson.loads(error.read())

    return await asyncio.to_thread(get)


async def wait_subscribers(server: Any, channel: str, count: int, timeout_s: float = 10) -> None:
    """Until ``GET /api/channels/<channel>`` counts ``count`` subscribers (presence is
    recorded right after ``subscribed`` is sent)."""

    async def counted() -> bool:
        status, body = await http_get(f"{server.url}/api/channels/{channel}")
        assert status == 200, body
        return bool(body["subscribers"] == count)

    await wait_until(counted, timeout_s, f"{count} subscribers on {channel!r}")


async def open_ws(ws_url: str, channel: str, **kwargs: Any) -> ClientConnection:
    """Connect to ``/ws`` and subscribe to ``channel``."""
    ws = await ws_connect(f"{ws_url}/ws", **kwargs)
    await ws.send(orjson.dumps({"op": "subscribe", "channel": channel, "id": "sub"}).decode())
    event = await recv_event(ws)
    assert (event["type"], event.get("id")) == ("subscribed", "sub"), event
    return ws


async def reply_to(ws: ClientConnection, command_id: Any) -> Any:
    """The next event that echoes ``command_id``, skipping messages, joins and leaves."""
    while True:
        event = await recv_event(ws)
        if event.get("id") == command_id:
            return event


async def open_violator(server: Any, endpoint: str, channel: str, **kwargs: Any) -> Any:
    if endpoint == "feed":
        return await open_feed(server.ws_url, channel, **kwargs)
    return await open_ws(server.ws_url, channel, **kwargs)


async def data_until(ws: ClientConnection, marker: str, timeout_s: float = 20.0) -> list[Any]:
    """Read ``message`` events up to the one carrying ``marker``; return the data before it."""
    seen: list[Any] = []
    async with asyncio.timeout(timeout_s):
        while True:
            [message] = await recv_messages(ws, 1, timeout_s)
            if message["data"] == marker:
                return seen
            seen.append(message["data"])


async def assert_undisturbed(server: Any, channel: str, bystander: ClientConnection) -> list[Any]:
    """The bystander gets a message published now, and the instance is alive.

    Returns the data the bystander received before that message."""
    marker = f"still here {uuid.uuid4().hex}"
    status, body = await publish_http(server.url, channel, marker)
    assert status == 200, body
    before = await data_until(bystander, marker)
    assert await http_get(f"{server.url}/health") == (200, {"status": "ok"})
    return before


async def events_until_closed(
    ws: ClientConnection, timeout_s: float = 15.0
) -> tuple[list[Any], int | None]:
    """Every event received until the server closes, and the close code it sent."""
    events: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                events.append(orjson.loads(await ws.recv()))
    except ConnectionClosed as closed:
        return events, closed.rcvd.code if closed.rcvd is not None else None


# -- frame size, binary frames


@pytest.mark.parametrize("endpoint", ["feed", "ws"])
async def test_a_frame_over_max_message_bytes_closes_1009_and_spares_the_others(
    feeds_server_factory: Any, redis_url: str, endpoint: str
) -> None:
    server = feeds_server_factory(redis_url, args=["--max-message-bytes", "1024"])
    bystander = await open_feed(server.ws_url, "room")
    violator = await open_violator(server, endpoint, "room")
    await violator.send("x" * 2048)
    assert await close_code(violator) == 1009
    assert await assert_undisturbed(server, "room", bystander) == []


@pytest.mark.parametrize("endpoint", ["feed", "ws"])
async def test_a_binary_frame_closes_1003_and_spares_the_others(
    feeds_server_factory: Any, redis_url: str, endpoint: str
) -> None:
    server = feeds_server_factory(redis_url)
    bystander = await open_feed(server.ws_url, "room")
    violator = await open_violator(server, endpoint, "room")
    await violator.send(b'{"op": "ping"}')
    assert await close_code(violator) == 1003
    assert await assert_undisturbed(server, "room", bystander) == []


# -- channel names


@pytest.mark.parametrize(
    "bad",
    [
        "with%20space",
        "x" * 201,
        "brace%7Bd%7D",
        "caf%C3%A9",
        "semi%3Bcolon",
    ],
    ids=["space", "201-chars", "braces", "non-ascii", "semicolon"],
)
async def test_an_invalid_channel_name_is_refused_with_400_before_the_upgrade(
    feeds_server_factory: Any, redis_url: str, bad: str
) -> None:
    server = feeds_server_factory(redis_url)
    bystander = await open_feed(server.ws_url, "room")
    with pytest.raises(InvalidStatus) as refused:
        await ws_connect(f"{server.ws_url}/feed/{bad}")
    assert refused.value.response.status_code == 400
    assert orjson.loads(refused.value.response.body)["code"] == "bad_channel"
    assert await assert_undisturbed(server, "room", bystander) == []


async def test_the_longest_valid_channel_name_and_every_allowed_character_are_accepted(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    for name in ("y" * 200, "AZaz09_-.:@$/x"):
        ws = await open_feed(server.ws_url, name)
        status, body = await publish_http(server.url, name, "ok")
        assert status == 200, body
        [message] = await recv_messages(ws, 1)
        assert (message["channel"], message["data"]) == (name, "ok")


async def test_an_invalid_channel_on_ws_is_an_error_event_and_the_connection_stays(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    bystander = await open_feed(server.ws_url, "room")
    ws = await open_ws(server.ws_url, "room")
    for n, bad in enumerate(["", "a b", "x" * 201, "{tag}", 42, None]):
        await ws.send(orjson.dumps({"op": "subscribe", "channel": bad, "id": n}).decode())
        error = await reply_to(ws, n)
        assert (error["type"], error["code"], error["id"]) == ("error", "bad_channel", n), error
    await ws.send('{"op": "publish", "channel": "no way", "data": 1, "id": "p"}')
    error = await reply_to(ws, "p")
    assert (error["type"], error["code"], error["id"]) == ("error", "bad_channel", "p")
    await ws.send('{"op": "ping", "id": "still"}')
    assert await reply_to(ws, "still") == {"type": "pong", "id": "still"}
    assert await assert_undisturbed(server, "room", bystander) == []


async def test_an_invalid_channel_on_the_http_api_is_400_bad_channel(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    bystander = await open_feed(server.ws_url, "room")
    for bad in ["a b", "x" * 201, "{tag}", "", 7]:
        status, body = await publish_http(server.url, bad, "nope")  # type: ignore[arg-type]
        assert (status, body["code"]) == (400, "bad_channel"), (bad, body)
    status, body = await http_get(f"{server.url}/api/channels/a%20b")
    assert (status, body["code"]) == (400, "bad_channel")
    assert await assert_undisturbed(server, "room", bystander) == []


# -- publish rate


async def test_publishing_too_fast_on_feed_is_rate_limited_then_closed_1008(
    feeds_server_factory: Any, redis_url: str
) -> None:
    # 3 at once, then one every 10 s: everything after the third frame is over the rate.
    server = feeds_server_factory(redis_url, args=["--rate-limit", "0.1", "--rate-burst", "3"])
    bystander = await open_feed(server.ws_url, "room")
    violator = await open_feed(server.ws_url, "room")
    for n in range(3):
        await violator.send(str(n))
    await violator.send("3")
    events: list[Any] = []
    while not any(e["type"] == "error" for e in events):
        events.append(await recv_event(violator))
    [error] = [e for e in events if e["type"] == "error"]
    assert error["code"] == "rate_limited", error
    # The refused frame was dropped, the connection still open; going on gets it closed.
    for n in range(4, 100):
        try:
            await violator.send(str(n))
        except ConnectionClosed:
            break
    rest, code = await events_until_closed(violator)
    assert code == 1008
    assert {e["code"] for e in rest if e["type"] == "error"} <= {"rate_limited"}
    # Only the burst was published; the bystander's own publishing is not limited by it.
    await bystander.send("bystander")
    assert await assert_undisturbed(server, "room", bystander) == [0, 1, 2, "bystander"]


async def test_publishing_too_fast_on_ws_is_rate_limited_with_the_id_then_closed_1008(
    feeds_server_factory: Any, redis_url: str
) -> None:
    # Two publishes at once, then one every 10 s (the subscription counts apart).
    server = feeds_server_factory(redis_url, args=["--rate-limit", "0.1", "--rate-burst", "2"])
    bystander = await open_feed(server.ws_url, "room")
    violator = await open_ws(server.ws_url, "room")

    async def publish(n: int) -> None:
        await violator.send(
            orjson.dumps({"op": "publish", "channel": "room", "data": n, "id": n}).decode()
        )

    for n in range(3):
        await publish(n)
    replies: dict[int, Any] = {}
    while len(replies) < 3:
        event = await recv_event(violator)
        if event["type"] in ("ack", "error"):
            replies[event["id"]] = event
    assert [replies[n]["type"] for n in range(3)] == ["ack", "ack", "error"]
    assert replies[2]["code"] == "rate_limited"
    # Commands other than publish and subscribe are not rate limited.
    await violator.send('{"op": "ping", "id": "p"}')
    assert (await reply_to(violator, "p"))["type"] == "pong"
    for n in range(3, 100):
        try:
            await publish(n)
        except ConnectionClosed:
            break
    _, code = await events_until_closed(violator)
    assert code == 1008
    assert await assert_undisturbed(server, "room", bystander) == [0, 1]


async def test_the_1008_for_going_on_over_the_rate_comes_after_every_earlier_reply(
    feeds_server_factory: Any, redis_url: str
) -> None:
    """The close answers the publish that earned it, in its turn: the ack of a publish
    still at the broker and the errors of the refusals before it are sent first. (It
    closed at once, dropping what the publishes in flight had not answered yet.)"""
    server = feeds_server_factory(
        redis_url, args=["--rate-limit", "0.1", "--rate-burst", "1", "--publish-window", "64"]
    )
    violator = await open_ws(server.ws_url, "room")
    # Sent back to back: publish 0 is at the broker while the refusals are counted.
    for n in range(60):
        await violator.send(
            orjson.dumps({"op": "publish", "channel": "room", "data": n, "id": n}).decode()
        )
    events, code = await events_until_closed(violator)
    replies = [(e["type"], e.get("code"), e["id"]) for e in events if "id" in e]
    # Publish 0 took the one token; 51 refusals in a row close.
    refusals = [("error", "rate_limited", n) for n in range(1, 51)]
    assert (replies, code) == ([("ack", None, 0), *refusals], 1008)


async def test_subscribes_and_publishes_are_counted_apart(
    feeds_server_factory: Any, redis_url: str
) -> None:
    """The contract's rate limit is a publish rate: a client that subscribes to its
    channels first still has the whole burst to publish. Subscribes have a bucket of
    their own, with the same rate and burst (flapping is limited, test_hostile_input)."""
    server = feeds_server_factory(redis_url, args=["--rate-limit", "0.1", "--rate-burst", "3"])
    client = await open_ws(server.ws_url, "room")  # one subscribe
    for name in ("a", "b"):
        await client.send(orjson.dumps({"op": "subscribe", "channel": name, "id": name}).decode())
        assert (await reply_to(client, name))["type"] == "subscribed"
    await client.send(orjson.dumps({"op": "subscribe", "channel": "c", "id": "c"}).decode())
    assert (await reply_to(client, "c"))["code"] == "rate_limited"
    for n in range(4):
        await client.send(
            orjson.dumps({"op": "publish", "channel": "room", "data": n, "id": n}).decode()
        )
    replies = [await reply_to(client, n) for n in range(4)]
    assert [r["type"] for r in replies] == ["ack", "ack", "ack", "error"]


# -- subscriptions per /ws connection


async def test_subscribing_past_max_subscriptions_is_limit_exceeded_and_the_connection_stays(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url, args=["--max-subscriptions", "2"])
    bystander = await open_feed(server.ws_url, "c")
    ws = await open_ws(server.ws_url, "a")

    async def command(**fields: Any) -> Any:
        await ws.send(orjson.dumps(fields).decode())
        return await reply_to(ws, fields["id"])

    assert (await command(op="subscribe", channel="b", id=1))["type"] == "subscribed"
    refused = await command(op="subscribe", channel="c", id=2)
    assert (refused["type"], refused["code"]) == ("error", "limit_exceeded"), refused
    assert (await command(op="ping", id=3))["type"] == "pong"
    # The refused channel was not subscribed: its messages do not arrive.
    assert await assert_undisturbed(server, "c", bystander) == []
    await wait_subscribers(server, "c", 1)
    # Unsubscribing makes room again.
    assert (await command(op="unsubscribe", channel="a", id=4))["type"] == "unsubscribed"
    assert (await command(op="subscribe", channel="c", id=5))["type"] == "subscribed"
    await publish_http(server.url, "c", "now you too")
    [message] = await recv_messages(ws, 1)
    assert (message["channel"], message["data"]) == ("c", "now you too")
    assert await assert_undisturbed(server, "c", bystander) == ["now you too"]


# -- outbound queue


async def test_a_client_that_stops_reading_is_closed_1013_past_max_queue_and_recovers(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(
        redis_url,
        args=[
            "--max-queue", "20", "--history-size", "200", "--recovery-max", "200",
            # The API takes bodies up to this size: the messages below are 200 KB.
            "--max-message-bytes", "300000",
        ],
    )  # fmt: skip
    status, first = await publish_http(server.url, "busy", "first")
    assert status == 200
    bystander = await open_feed(server.ws_url, "busy")
    # max_queue=1: the client library stops reading the socket once one frame waits, so
    # TCP backpressure reaches the server and frames pile up in its outbox.
    stuck = await ws_connect(f"{server.ws_url}/feed/busy", max_queue=1)
    subscribed = await recv_event(stuck)
    assert (subscribed["type"], subscribed["offset"]) == ("subscribed", first["offset"])
    payload = "x" * 200_000
    published = 100  # 20 MB: more than the kernel buffers hold
    received: list[Any] = []

    async def read_all() -> None:
        received.extend(await recv_messages(bystander, published, timeout_s=60))

    reading = asyncio.create_task(read_all())
    for n in range(published):
        status, _ = await publish_http(server.url, "busy", {"n": n, "p": payload})
        assert status == 200
    await reading
    assert [m["data"]["n"] for m in received] == list(range(published))
    assert await close_code(stuck, timeout_s=30) == 1013
    # It comes back with since/epoch and gets every message it missed, then live ones.
    query = f"since={subscribed['offset']}&epoch={subscribed['epoch']}"
    async with connect(f"{server.ws_url}/feed/busy?{query}", open_timeout=10) as again:
        resubscribed = await recv_event(again)
        assert (resubscribed["type"], resubscribed["recovered"]) == ("subscribed", True)
        recovered = await recv_messages(again, published, timeout_s=30)
        assert [m["data"]["n"] for m in recovered] == list(range(published))
    assert await assert_undisturbed(server, "busy", bystander) == []


async def test_recovering_more_messages_than_max_queue_at_once_is_not_an_overflow(
    feeds_server_factory: Any, redis_url: str
) -> None:
    """A reading client that recovers 30 missed messages with --max-queue 5 gets them all;
    closing it with 1013 would only make it come back with the same ``since``, forever."""
    server = feeds_server_factory(redis_url, args=["--max-queue", "5"])
    status, first = await publish_http(server.url, "catchup", "first")
    assert status == 200
    for n in range(30):
        await publish_http(server.url, "catchup", n)
    query = f"since={first['offset']}&epoch={first['epoch']}"
    ws = await ws_connect(f"{server.ws_url}/feed/catchup?{query}")
    subscribed = await recv_event(ws)
    assert (subscribed["type"], subscribed["recovered"]) == ("subscribed", True)
    assert [m["data"] for m in await recv_messages(ws, 30)] == list(range(30))
    await publish_http(server.url, "catchup", "live")
    [live] = await recv_messages(ws, 1)
    assert live["data"] == "live"


# -- connections per instance


async def test_past_max_connections_upgrades_get_503_until_one_closes(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url, args=["--max-connections", "3"])
    bystander = await open_feed(server.ws_url, "room")
    others = [await open_feed(server.ws_url, "room"), await open_ws(server.ws_url, "room")]
    for path in ("/feed/room", "/ws"):
        with pytest.raises(InvalidStatus) as refused:
            await ws_connect(f"{server.ws_url}{path}")
        assert refused.value.response.status_code == 503
        assert orjson.loads(refused.value.response.body)["code"] == "limit_exceeded"
    # Plain HTTP is not counted against the limit.
    await wait_subscribers(server, "room", 3)
    await others[0].close()

    async def accepted() -> ClientConnection | None:
        try:
            return await open_feed(server.ws_url, "room")
        except InvalidStatus as exc:
            assert exc.response.status_code == 503
            return None

    newcomer = await wait_until(accepted, what="a new connection accepted after one closed")
    await assert_undisturbed(server, "room", bystander)
    [message] = await recv_messages(newcomer, 1)
    assert message["data"].startswith("still here")


async def test_a_burst_of_upgrades_never_exceeds_max_connections(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url, args=["--max-connections", "3"])

    async def attempt() -> ClientConnection | int:
        try:
            return await open_feed(server.ws_url, "crowd")
        except InvalidStatus as exc:
            return int(exc.response.status_code)

    outcomes = await asyncio.gather(*(attempt() for _ in range(12)))
    accepted = [o for o in outcomes if not isinstance(o, int)]
    assert len(accepted) == 3, outcomes
    assert sorted(o for o in outcomes if isinstance(o, int)) == [503] * 9
    await wait_subscribers(server, "crowd", 3)
    assert await assert_undisturbed(server, "crowd", accepted[0]) == []


# -- idle peers


async def test_a_peer_that_never_answers_pings_is_closed_and_others_stay(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(
        redis_url, args=["--ping-interval", "0.3", "--ping-timeout", "0.6"]
    )
    bystander = await open_feed(server.ws_url, "room", ping_interval=None)
    silent = await open_feed(server.ws_url, "room", ping_interval=None)
    await wait_subscribers(server, "room", 2)
    # It stops reading: the server's pings are never seen, so never answered.
    silent.transport.pause_reading()
    await wait_subscribers(server, "room", 1, timeout_s=15)
    silent.transport.resume_reading()
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(15):
            while True:
                await silent.recv()
    # The bystander answered every ping meanwhile and is still subscribed.
    await asyncio.sleep(1.5)
    assert await assert_undisturbed(server, "room", bystander) == []
