"""The bench's lean subscriber client against a real ``websockets`` server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from sanic_feeds.bench.wire import FeedSocket, HandshakeRefused, open_socket
from tests.support.ws import wait_until

Handler = Callable[[ServerConnection], Awaitable[None]]


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers = []

    async def start(handler: Handler) -> str:
        def refuse_forbidden(connection: ServerConnection, request: Request) -> Response | None:
            if request.path.startswith("/forbidden"):
                return connection.respond(403, "no\n")
            return None

        instance = await serve(handler, "127.0.0.1", 0, process_request=refuse_forbidden)
        servers.append(instance)
        port = next(iter(instance.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    yield start
    for instance in servers:
        instance.close()
        await instance.wait_closed()


async def test_small_extended_and_fragmented_messages_arrive_whole_and_in_order(
    server: Callable[[Handler], Awaitable[str]],
) -> None:
    big = "x" * 70_000  # 64-bit length
    medium = "m" * 300  # 16-bit length

    async def handler(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.send(medium)
        await ws.send(big)
        await ws.send(iter(["frag", "mented"]))  # a fragmented text message
        await ws.send(b"\x01binary")
        await ws.wait_closed()

    url = await server(handler)
    received: list[bytes] = []
    socket = await open_socket(f"{url}/feed/x?since=1", received.append)
    await wait_until(lambda: len(received) == 5, what="five messages")
    assert received == [b"one", medium.encode(), big.encode(), b"fragmented", b"\x01binary"]
    await socket.close()
    assert await socket.closed == 1000


async def test_pings_are_answered_so_the_server_keeps_the_connection(
    server: Callable[[Handler], Awaitable[str]],
) -> None:
    pongs: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        for _ in range(3):
            waiter = await ws.ping(b"are you there")
            pongs.append(await asyncio.wait_for(waiter, 5))
        await ws.send("done")
        await ws.wait_closed()

    url = await server(handler)
    received: list[bytes] = []
    socket = await open_socket(url, received.append)
    await wait_until(lambda: received == [b"done"], what="the message after the pings")
    assert len(pongs) == 3
    await socket.close()


async def test_the_servers_close_code_and_reason_are_reported(
    server: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.close(1013, "too slow")

    url = await server(handler)
    socket = await open_socket(url, lambda frame: None)
    assert await asyncio.wait_for(socket.closed, 5) == 1013
    assert socket.close_reason == "too slow"


async def test_a_refused_upgrade_raises_with_the_http_status(
    server: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    url = await server(handler)
    with pytest.raises(HandshakeRefused) as refused:
        await open_socket(f"{url}/forbidden", lambda frame: None)
    assert refused.value.status == 403


async def test_a_connection_dropped_without_a_close_frame_reports_1006(
    server: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(ws: ServerConnection) -> None:
        ws.transport.abort()

    url = await server(handler)
    socket: FeedSocket = await open_socket(url, lambda frame: None)
    assert await asyncio.wait_for(socket.closed, 5) == 1006
