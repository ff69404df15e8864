"""The app's subscribe, publish and disconnect hooks, run by a Node with in-process ``/ws``
sessions: allow, refuse, change the data, an unexpected error, a timeout.

The connect hook and the ``/feed`` refusal happen in the web edge before the upgrade:
``tests/integration/test_hooks_app.py`` runs those against a real process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sanic_feeds import BadRequest, ClientView, Forbidden, RateLimited
from sanic_feeds.errors import FeedsError
from sanic_feeds.server.node import Node
from sanic_feeds.settings import Settings
from tests.integration.test_ws_protocol import Client
from tests.support.fakes import InProcessSession

#: Small, so that the timeout tests are quick; hooks that hang sleep far longer.
HOOK_TIMEOUT_S = 0.2


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    node = Node(Settings(hook_timeout_s=HOOK_TIMEOUT_S))
    await node.start()
    yield node
    for conn in list(node.connections):
        conn.close(1000)
    await asyncio.sleep(0)
    node.drain()
    await node.stop()


@pytest.fixture
async def connect(node: Node) -> AsyncIterator[Any]:
    sessions: list[InProcessSession] = []

    async def open_client() -> Client:
        session = InProcessSession(node)
        sessions.append(session)
        return Client(session)

    yield open_client
    for session in sessions:
        await session.close()


def publish_hook(node: Node, pattern: str) -> Any:
    """``@feeds.on_publish(pattern)``, on a Node without Feeds."""

    def register(fn: Any) -> Any:
        node.hooks.add_publish(pattern, fn)
        return fn

    return register


def subscribe_hook(node: Node, pattern: str) -> Any:
    """``@feeds.on_subscribe(pattern)``, on a Node without Feeds."""

    def register(fn: Any) -> Any:
        node.hooks.add_subscribe(pattern, fn)
        return fn

    return register


async def next_message(client: Client) -> dict[str, Any]:
    return await client.next_matching(lambda e: e["type"] == "message")


def hook_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sanic_feeds.hooks"]


# -- publish


async def test_a_publish_hook_that_returns_the_data_lets_it_through(
    node: Node, connect: Any
) -> None:
    seen: list[tuple[str | None, str, Any]] = []

    @publish_hook(node, "chat:*")
    async def check(client: ClientView, channel: str, data: Any) -> Any:
        seen.append((client.id, channel, data))
        return data

    reader, writer = await connect(), await connect()
    await reader.subscribe("chat:1")
    ack = await writer.command(op="publish", channel="chat:1", data={"text": "hi"}, id=1)
    assert ack["type"] == "ack"
    [message] = await reader.messages("chat:1", 1)
    assert message["data"] == {"text": "hi"}
    assert seen == [(writer.ws.conn.id, "chat:1", {"text": "hi"})]


async def test_a_publish_hook_changes_what_is_published(node: Node, connect: Any) -> None:
    @publish_hook(node, "chat:*")
    async def stamp(client: ClientView, channel: str, data: Any) -> Any:
        return {"text": data["text"].strip(), "from": client.id}

    reader, writer = await connect(), await connect()
    await reader.subscribe("chat:1")
    await writer.command(op="publish", channel="chat:1", data={"text": "  hi  "}, id=1)
    [message] = await reader.messages("chat:1", 1)
    assert message["data"] == {"text": "hi", "from": writer.ws.conn.id}


@pytest.mark.parametrize(
    ("error", "code"),
    [(BadRequest, "bad_request"), (Forbidden, "forbidden"), (RateLimited, "rate_limited")],
)
async def test_a_publish_hook_refuses_with_the_code_of_what_it_raises(
    node: Node, connect: Any, error: type[FeedsError], code: str
) -> None:
    @publish_hook(node, "chat:*")
    async def refuse(client: ClientView, channel: str, data: Any) -> Any:
        raise error("not this one")

    reader, writer = await connect(), await connect()
    await reader.subscribe("chat:1")
    reply = await writer.command(op="publish", channel="chat:1", data="x", id=7)
    assert reply == {"type": "error", "code": code, "message": "not this one", "id": 7}
    # Nothing was published: the next publish on another channel is the first to arrive.
    await reader.subscribe("other")
    await writer.command(op="publish", channel="other", data="y", id=8)
    assert (await next_message(reader))["channel"] == "other"
    await writer.assert_alive()


async def test_a_publish_hook_that_raises_refuses_that_publish_only_and_is_logged_once(
    node: Node, connect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @publish_hook(node, "chat:*")
    async def broken(client: ClientView, channel: str, data: Any) -> Any:
        if data == "bad":
            raise ZeroDivisionError("a bug in the app")
        return data

    reader, writer, bystander = await connect(), await connect(), await connect()
    await reader.subscribe("chat:1")
    reply = await writer.command(op="publish", channel="chat:1", data="bad", id=1)
    assert reply["code"] == "unavailable" and "bug" not in reply["message"]
    [record] = hook_records(caplog)
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    # The connection stays, and so does everyone else's.
    assert (await writer.command(op="publish", channel="chat:1", data="good", id=2))["type"] == (
        "ack"
    )
    [message] = await reader.messages("chat:1", 1)
    assert message["data"] == "good"
    await writer.assert_alive()
    await bystander.assert_alive()


async def test_a_publish_hook_that_hangs_is_cut_off_with_unavailable(
    node: Node, connect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cancelled = asyncio.Event()

    @publish_hook(node, "chat:*")
    async def hang(client: ClientView, channel: str, data: Any) -> Any:
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()
        return data

    writer = await connect()
    reply = await writer.command(op="publish", channel="chat:1", data="x", id=1)
    assert reply["code"] == "unavailable"
    assert cancelled.is_set()
    [record] = hook_records(caplog)
    assert "hook-timeout" in record.getMessage()
    await writer.assert_alive()


async def test_a_publish_hook_that_forgets_to_return_refuses_rather_than_publish_null(
    node: Node, connect: Any
) -> None:
    @publish_hook(node, "chat:*")
    async def forgetful(client: ClientView, channel: str, data: Any) -> Any:
        data["checked"] = True

    writer = await connect()
    reply = await writer.command(op="publish", channel="chat:1", data={"a": 1}, id=1)
    assert reply["code"] == "unavailable"


async def test_the_most_specific_publish_hook_runs_and_only_it(node: Node, connect: Any) -> None:
    ran: list[str] = []

    def hook(name: str) -> Any:
        async def run(client: ClientView, channel: str, data: Any) -> Any:
            ran.append(name)
            return data

        return run

    for pattern in ("*", "chat:*", "chat:vip:*", "chat:vip:lobby"):
        node.hooks.add_publish(pattern, hook(pattern))
    writer = await connect()
    for channel in ("news", "chat:1", "chat:vip:2", "chat:vip:lobby"):
        await writer.command(op="publish", channel=channel, data=1, id=channel)
    assert ran == ["*", "chat:*", "chat:vip:*", "chat:vip:lobby"]


async def test_a_publish_hook_runs_once_per_publish_however_many_receive_it(
    node: Node, connect: Any
) -> None:
    calls = 0

    @publish_hook(node, "chat:*")
    async def count(client: ClientView, channel: str, data: Any) -> Any:
        nonlocal calls
        calls += 1
        return data

    readers = [await connect() for _ in range(5)]
    for reader in readers:
        await reader.subscribe("chat:1")
    writer = await connect()
    await writer.command(op="publish", channel="chat:1", data="x", id=1)
    for reader in readers:
        await reader.messages("chat:1", 1)
    assert calls == 1


async def test_the_backends_own_publish_runs_no_hook(node: Node, connect: Any) -> None:
    @publish_hook(node, "*")
    async def refuse(client: ClientView, channel: str, data: Any) -> Any:
        raise Forbidden("clients may not")

    reader = await connect()
    await reader.subscribe("chat:1")
    await node.publish("chat:1", "from the backend")
    [message] = await reader.messages("chat:1", 1)
    assert message["data"] == "from the backend"


# -- subscribe


async def test_a_subscribe_hook_that_returns_lets_the_client_in(node: Node, connect: Any) -> None:
    seen: list[tuple[str, frozenset[str]]] = []

    @subscribe_hook(node, "room:*")
    async def allow(client: ClientView, channel: str) -> None:
        seen.append((channel, client.channels))

    client = await connect()
    await client.subscribe("lobby")
    await client.subscribe("room:1")
    assert seen == [("room:1", frozenset({"lobby"}))]


async def test_a_subscribe_hook_refuses_with_forbidden(node: Node, connect: Any) -> None:
    @subscribe_hook(node, "room:*")
    async def refuse(client: ClientView, channel: str) -> None:
        if channel == "room:closed":
            raise Forbidden("the room is closed")

    client, writer = await connect(), await connect()
    reply = await client.command(op="subscribe", channel="room:closed", id=1)
    assert reply == {"type": "error", "code": "forbidden", "message": "the room is closed", "id": 1}
    assert client.ws.conn.channels == set()
    await client.subscribe("room:open")
    await writer.command(op="publish", channel="room:closed", data="secret", id=2)
    await writer.command(op="publish", channel="room:open", data="hello", id=3)
    assert (await next_message(client))["channel"] == "room:open"


async def test_a_subscribe_hook_that_raises_refuses_that_subscribe_only(
    node: Node, connect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @subscribe_hook(node, "room:*")
    async def broken(client: ClientView, channel: str) -> None:
        raise KeyError(channel)

    client = await connect()
    reply = await client.command(op="subscribe", channel="room:1", id=1)
    assert reply["code"] == "unavailable"
    assert client.ws.conn.channels == set()
    [record] = hook_records(caplog)
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    await client.assert_alive()


async def test_a_subscribe_hook_that_hangs_is_cut_off_with_unavailable(
    node: Node, connect: Any
) -> None:
    @subscribe_hook(node, "room:*")
    async def hang(client: ClientView, channel: str) -> None:
        await asyncio.sleep(60)

    client = await connect()
    reply = await client.command(op="subscribe", channel="room:1", id=1)
    assert reply["code"] == "unavailable"
    assert client.ws.conn.channels == set()
    await client.assert_alive()


async def test_a_subscribe_hook_is_not_asked_for_what_the_server_refuses(
    node: Node, connect: Any
) -> None:
    asked: list[str] = []

    @subscribe_hook(node, "room:*")
    async def allow(client: ClientView, channel: str) -> None:
        asked.append(channel)

    client = await connect()
    await client.subscribe("room:1")
    reply = await client.command(op="subscribe", channel="room:1", id=2)
    assert reply["code"] == "bad_request"  # already subscribed
    assert asked == ["room:1"]


# -- disconnect


async def test_the_disconnect_hook_is_told_the_channels_and_the_close_code(
    node: Node, connect: Any
) -> None:
    told: list[tuple[str, frozenset[str], int]] = []

    async def gone(client: ClientView, code: int) -> None:
        told.append((client.id, client.channels, code))

    node.hooks.add_disconnect(gone)
    client = await connect()
    await client.subscribe("room:1")
    client_id = client.ws.conn.id
    client.ws.conn.close(1008, "policy")
    await client.ws.task
    assert told == [(client_id, frozenset({"room:1"}), 1008)]


@pytest.mark.parametrize("failure", ["raises", "hangs"])
async def test_a_disconnect_hook_that_fails_is_logged_and_the_channels_are_left(
    node: Node, connect: Any, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    async def gone(client: ClientView, code: int) -> None:
        if failure == "hangs":
            await asyncio.sleep(60)
        raise RuntimeError("a bug in the app")

    node.hooks.add_disconnect(gone)
    client = await connect()
    await client.subscribe("room:1")
    await client.ws.close()
    assert node.hub.local_subscribers("room:1") == 0
    assert len(hook_records(caplog)) == 1
