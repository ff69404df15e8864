"""What an idle ``/feed`` connection keeps on the server, checked on a Sanic server run in
the test's own event loop: each test guards one of the cuts docs/benchmarks.md lists
("What an idle connection costs"). No RSS threshold: each asserts what is (not) held."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sanic import Sanic
from websockets.asyncio.client import ClientConnection, connect

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
