"""sanic-feeds as a library: Feeds mounted in a user's own app, and the server-less Publisher."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import InvalidStatus

from sanic_feeds import BrokerUnavailable, Publisher
from sanic_feeds.errors import BadChannel
from tests.support.feeds_server import FeedsServer, free_port
from tests.support.ws import close_code, open_feed, recv_event, recv_messages

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class LibraryApp(FeedsServer):
    """``python -m tests.support.library_app``: the user's app, with Feeds mounted in it."""

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "tests.support.library_app",
            "--host", self.host,
            "--port", str(self.port),
            "--broker", self.broker,
            *self.args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["PYTHONPATH"] = str(ROOT)
        return env


def start_library_app(factory: Any, broker: str, *args: str) -> LibraryApp:
    app = LibraryApp(broker, args=args)
    factory.servers.append(app)  # stopped (SIGTERM, bounded) and cleaned up with the others
    app.start()
    return app


async def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    def call() -> tuple[int, Any]:
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, orjson.loads(reply.read())

    return await asyncio.to_thread(call)


async def test_the_apps_own_route_works_beside_the_mounted_feed_routes(
    feeds_server_factory: Any,
) -> None:
    app = start_library_app(feeds_server_factory, "memory://")
    assert await http("GET", f"{app.url}/hello") == (200, {"hello": "from the app"})
    status, channel = await http("GET", f"{app.url}/api/channels/orders")
    assert status == 200
    assert channel["subscribers"] == 0
    assert await asyncio.to_thread(app.stop) == 0


async def test_feed_clients_of_the_app_receive_each_others_frames(
    feeds_server_factory: Any,
) -> None:
    app = start_library_app(feeds_server_factory, "memory://")
    sender = await open_feed(app.ws_url, "chat")
    receiver = await open_feed(app.ws_url, "chat")
    await sender.send('{"text": "hi"}')
    [message] = await recv_messages(receiver, 1)
    assert message["channel"] == "chat"
    assert message["data"] == {"text": "hi"}
    assert message["client"] is not None


async def test_a_publish_from_the_apps_route_reaches_a_feed_subscriber(
    feeds_server_factory: Any,
) -> None:
    app = start_library_app(feeds_server_factory, "memory://")
    subscriber = await open_feed(app.ws_url, "orders")
    status, reply = await http("POST", f"{app.url}/orders", {"id": 42})
    assert status == 200
    [message] = await recv_messages(subscriber, 1)
    assert message["data"] == {"id": 42}
    assert message["client"] is None
    assert (message["offset"], message["epoch"]) == (reply["offset"], reply["epoch"])


async def test_a_publish_from_the_apps_route_reaches_a_serve_instance_on_the_same_redis(
    feeds_server_factory: Any, redis_url: str
) -> None:
    app = start_library_app(feeds_server_factory, redis_url)
    server = feeds_server_factory(broker=redis_url)
    on_app = await open_feed(app.ws_url, "orders")
    on_server = await open_feed(server.ws_url, "orders")
    replies = [(await http("POST", f"{app.url}/orders", {"id": n}))[1] for n in range(3)]
    assert [reply["offset"] for reply in replies] == [1, 2, 3]
    for ws in (on_app, on_server):
        messages = await recv_messages(ws, 3)
        assert [(m["offset"], m["data"]) for m in messages] == [
            (n + 1, {"id": n}) for n in range(3)
        ]


async def test_publisher_reaches_subscribers_of_two_instances_with_increasing_offsets(
    feeds_server_factory: Any, redis_url: str
) -> None:
    servers = [feeds_server_factory(broker=redis_url) for _ in range(2)]
    subscribers = [await open_feed(s.ws_url, "news") for s in servers]
    async with Publisher(redis_url) as pub:
        positions = [await pub.publish("news", {"n": n}) for n in range(5)]
    assert [p.offset for p in positions] == [1, 2, 3, 4, 5]
    assert len({p.epoch for p in positions}) == 1
    for ws in subscribers:
        messages = await recv_messages(ws, 5)
        assert [(m["offset"], m["epoch"], m["data"]) for m in messages] == [
            (p.offset, p.epoch, {"n": n}) for n, p in enumerate(positions)
        ]
        assert all(m["client"] is None for m in messages)


async def test_publisher_and_a_library_app_share_one_order_of_offsets(
    feeds_server_factory: Any, redis_url: str
) -> None:
    app = start_library_app(feeds_server_factory, redis_url)
    subscriber = await open_feed(app.ws_url, "mixed")
    async with Publisher(redis_url) as pub:
        first = await pub.publish("mixed", "from a worker")
        _, second = await http("POST", f"{app.url}/notify/mixed", "from the app")
        third = await pub.publish("mixed", "from a worker again")
    assert [first.offset, second["offset"], third.offset] == [1, 2, 3]
    messages = await recv_messages(subscriber, 3)
    assert [m["data"] for m in messages] == ["from a worker", "from the app", "from a worker again"]


async def test_publisher_history_is_recovered_by_a_late_subscriber(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(broker=redis_url)
    async with Publisher(redis_url) as pub:
        first = await pub.publish("late", "one")
        await pub.publish("late", "two")
    ws = await open_feed(
        server.ws_url, "late", query=f"since={first.offset - 1}&epoch={first.epoch}"
    )
    messages = await recv_messages(ws, 2)
    assert [m["data"] for m in messages] == ["one", "two"]


def test_publisher_refuses_the_memory_broker() -> None:
    with pytest.raises(ValueError, match="memory://"):
        Publisher("memory://")


async def test_publisher_refuses_a_bad_channel_name(redis_url: str) -> None:
    async with Publisher(redis_url) as pub:
        with pytest.raises(BadChannel):
            await pub.publish("no spaces allowed", 1)


async def test_publisher_to_an_unreachable_broker_raises_broker_unavailable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(BrokerUnavailable):
        async with asyncio.timeout(15), Publisher(url) as pub:
            await pub.publish("news", 1)


async def test_a_subscriber_of_the_app_sees_its_join_event_from_another_client(
    feeds_server_factory: Any,
) -> None:
    app = start_library_app(feeds_server_factory, "memory://")
    first = await open_feed(app.ws_url, "room")
    await open_feed(app.ws_url, "room")
    events = [await recv_event(first) for _ in range(2)]
    assert [e["type"] for e in events] == ["join", "join"]


async def test_feeds_mounted_under_a_url_prefix_with_keyword_options(
    feeds_server_factory: Any,
) -> None:
    app = start_library_app(
        feeds_server_factory, "memory://", "--url-prefix", "/live", "--max-message-bytes", "100"
    )
    with pytest.raises(InvalidStatus) as refused:
        await open_feed(app.ws_url, "news")
    assert refused.value.response.status_code == 404
    ws = await open_feed(f"{app.ws_url}/live", "news")
    status, reply = await http(
        "POST", f"{app.url}/live/api/publish", {"channel": "news", "data": 1}
    )
    assert (status, reply["offset"]) == (200, 1)
    [message] = await recv_messages(ws, 1)
    assert message["data"] == 1
    await ws.send("x" * 200)  # the keyword option max_message_bytes=100
    assert await close_code(ws) == 1009


async def test_the_users_app_drains_its_feed_clients_with_1001_on_sigterm(
    feeds_server_factory: Any,
) -> None:
    app = start_library_app(feeds_server_factory, "memory://")
    ws = await open_feed(app.ws_url, "orders")
    assert app.pid is not None
    os.kill(app.pid, signal.SIGTERM)
    assert await close_code(ws) == 1001
    assert await asyncio.to_thread(app.wait, 10) == 0
