"""What an idle ``/feed`` connection keeps on the server, checked on a Sanic server run in
the test's own event loop: each test guards one of the cuts docs/benchmarks.md lists
("What an idle connection costs"). No RSS threshold: each asserts what is (not) held."""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sanic import Sanic
from sanic.compat import Header
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import Protocol as WSProtocol

from sanic_feeds.server.connection import Connection
from sanic_feeds.server.extension import Feeds, Gate
from sanic_feeds.settings import Settings

_HOST = "127.0.0.1"


@dataclass
class InProcessServer:
    feeds: Feeds
    url: str

    async def open_feed(self, channel: str) -> tuple[ClientConnection, Connection]:
        """A subscriber of ``channel``, once subscribed, and its server-side connection."""
        before = set(self.feeds.node.connections)
        client = await connect(f"{self.url}/feed/{channel}", ping_interval=None)
        assert '"subscribed"' in str(await asyncio.wait_for(client.recv(), 10))
        [conn] = set(self.feeds.node.connections) - before
        return client, conn


@pytest.fixture
async def server() -> AsyncIterator[InProcessServer]:
    Sanic.test_mode = True  # several apps of one name across tests
    app: Sanic[Any, Any] = Sanic("idle_connection")
    feeds = Feeds(app, settings=Settings(broker="memory://"))
    with socket.socket() as probe:
        probe.bind((_HOST, 0))
        port = probe.getsockname()[1]
    running = await app.create_server(
        host=_HOST, port=port, return_asyncio_server=True, access_log=False
    )
    assert running is not None
    await running.startup()
    await running.before_start()
    await running.after_start()
    try:
        yield InProcessServer(feeds, f"ws://{_HOST}:{port}")
    finally:
        await running.before_stop()
        await running.close()
        await running.after_stop()


async def test_an_upgraded_connection_keeps_no_http_timer_and_no_asyncio_events(
    server: InProcessServer,
) -> None:
    client, conn = await server.open_feed("news")
    io_proto: Any = conn.ws.io_proto
    # Sanic's timeout check would only have returned, 30 s later.
    assert io_proto._callback_check_timeouts is None
    # Each asyncio.Event holds a 760-byte deque.
    assert isinstance(io_proto._can_write, Gate)
    assert isinstance(io_proto._data_received, Gate)
    # Flow control still reaches the gate: Sanic's send() waits while writing is paused.
    io_proto.pause_writing()
    sending = asyncio.ensure_future(io_proto.send(b""))
    await asyncio.sleep(0.01)
    assert not sending.done()
    io_proto.resume_writing()
    await asyncio.wait_for(sending, 5)
    await client.close()


async def test_a_gate_lets_waiters_through_once_set_and_holds_them_once_cleared() -> None:
    gate = Gate(False)
    waiters = [asyncio.ensure_future(gate.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    gate.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert gate.is_set()
    assert await gate.wait() is True
    gate.clear()
    cancelled = asyncio.ensure_future(gate.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not gate._waiters  # a cancelled waiter leaves no future behind


def coroutine_chain(conn: Connection) -> list[Any]:
    """The coroutines (and generators) the connection's task is suspended in, outermost
    first: Sanic's, then the session's, down to the one that waits."""
    assert conn.task is not None
    chain = []
    awaited: Any = conn.task.get_coro()
    while awaited is not None and hasattr(awaited, "cr_frame"):
        chain.append(awaited)
        awaited = awaited.cr_await
    return chain


def frame_of(conn: Connection, name: str) -> Any:
    [frame] = [c.cr_frame for c in coroutine_chain(conn) if c.cr_code.co_name == name]
    return frame


async def test_the_session_holds_no_closure_while_it_waits(server: InProcessServer) -> None:
    client, conn = await server.open_feed("news")
    ours = [c for c in coroutine_chain(conn) if "sanic_feeds" in c.cr_code.co_filename]
    assert [c.cr_code.co_name for c in ours] == ["_session", "serve_feed", "recv"]
    for coroutine in ours:
        # A closure anywhere in a frame makes cells of the variables it uses, and the
        # function object lives as long as the frame.
        assert coroutine.cr_code.co_cellvars == (), coroutine.cr_code.co_name
        assert not any(
            isinstance(value, types.FunctionType) and value.__closure__
            for value in coroutine.cr_frame.f_locals.values()
        ), coroutine.cr_code.co_name
    assert inspect.ismethod(conn.outbox._on_abort)
    await client.close()


async def test_an_idle_connection_has_no_publish_in_flight_set(server: InProcessServer) -> None:
    client, conn = await server.open_feed("news")
    window = frame_of(conn, "serve_feed").f_locals["window"]
    assert window._running is None
    # The first publish makes it, and the publish goes through.
    await client.send('{"n": 1}')
    message = {"type": None}
    while message["type"] != "message":  # join events may come first
        message = json.loads(await asyncio.wait_for(client.recv(), 10))
    assert message["data"] == {"n": 1}
    assert window._running == set()
    await client.close()


async def test_the_parser_is_the_frame_parser_itself(server: InProcessServer) -> None:
    client, conn = await server.open_feed("news")
    ws_proto: Any = conn.ws.ws_proto
    assert ws_proto.parser.gi_code is WSProtocol.parse.__code__
    await client.close()


async def test_admission_leaves_sanics_query_and_header_caches_empty(
    server: InProcessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    iterated = []

    def spy(name: str) -> Any:
        original = getattr(Header, name)

        def record(self: Header, *args: Any) -> Any:
            iterated.append(name)
            return original(self, *args)

        return record

    # Iterating a CIMultiDict makes (and keeps) a case-insensitive key per header.
    for name in ("items", "keys", "__iter__"):
        monkeypatch.setattr(Header, name, spy(name))
    before = set(server.feeds.node.connections)
    client = await connect(
        f"{server.url}/feed/news?format=json&since=0&epoch=e", ping_interval=None
    )
    assert '"subscribed"' in str(await asyncio.wait_for(client.recv(), 10))
    [conn] = set(server.feeds.node.connections) - before
    request = frame_of(conn, "_session").f_locals["request"]
    assert iterated == []
    assert not request.parsed_args  # request.args was never asked
    await client.close()
