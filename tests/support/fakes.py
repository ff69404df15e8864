"""In-memory stand-ins for a connection's socket, for tests of the server without sockets.

- ``FakeTransport`` / ``FakeProtocol``: what an ``Outbox`` writes to; ``payloads`` splits
  what was written back into JSON values.
- ``FakeWebSocket``: what a ``Connection`` reads from and closes (``server.connection.WebSocket``).
- ``InProcessSession``: a ``/ws`` session run in-process against a ``Node``, with the
  ``send``/``recv``/``close`` of ``websockets``' client connection, so that one test reads
  the same against a real server and against a Node.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.protocol import State

from sanic_feeds.codec import WireFormat
from sanic_feeds.server.connection import Connection
from sanic_feeds.server.multiplex import serve_multiplex
from sanic_feeds.server.node import Node

__all__ = [
    "FakeProtocol",
    "FakeTransport",
    "FakeWebSocket",
    "InProcessSession",
    "frames",
    "payloads",
]


class FakeTransport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.buffered = 0
        #: Set by every write; cleared by whoever waits for the next one.
        self.wrote = asyncio.Event()

    def write(self, data: Any) -> None:
        self.written += data
        self.wrote.set()

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (16_384, 65_536)


class FakeProtocol:
    def __init__(self) -> None:
        self.transport: FakeTransport | None = FakeTransport()
        self.writable = asyncio.Event()

    async def send(self, data: bytes) -> None:
        await self.writable.wait()


def frames(written: bytes) -> list[bytes]:
    """Split written server WebSocket frames (unmasked) back into their payloads."""
    out, view = [], memoryview(written)
    while view:
        length, start = view[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(view[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(view[2:10], "big"), 10
        out.append(bytes(view[start : start + length]))
        view = view[start + length :]
    return out


def payloads(written: bytes) -> list[Any]:
    """Split written WebSocket frames back into JSON values."""
    return [orjson.loads(payload) for payload in frames(written)]


class _Session:
    def __init__(self) -> None:
        self.state = State.OPEN


class FakeWebSocket:
    """Frames in from ``feed()``, frames out into ``io_proto.transport.written``."""

    def __init__(self) -> None:
        self.io_proto: FakeProtocol | None = FakeProtocol()
        self.ws_proto = _Session()
        self._inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        #: The code and reason of the close the server started, once it did.
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def transport(self) -> FakeTransport:
        assert self.io_proto is not None and self.io_proto.transport is not None
        return self.io_proto.transport

    @property
    def close_code_sent(self) -> int | None:
        return self.close_code

    def feed(self, frame: str | bytes | None) -> None:
        """A frame from the client; None: the client went away."""
        self._inbox.put_nowait(frame)

    async def recv(self) -> str | bytes | None:
        if self.close_code is not None:
            return None
        return await self._inbox.get()

    def start_closing(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self.ws_proto.state = State.CLOSING
            self._inbox.put_nowait(None)  # wakes a waiting recv()


class InProcessSession:
    """One ``/ws`` connection to ``node``, its session running in a task of its own."""

    def __init__(self, node: Node) -> None:
        self.ws = FakeWebSocket()
        self.conn: Connection = node.connect(self.ws, WireFormat.JSON)
        self._node = node
        self._read = 0
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        try:
            await serve_multiplex(self._node, self.conn)
        finally:
            await self._node.disconnect(self.conn)

    async def send(self, message: str | bytes) -> None:
        self.ws.feed(message)

    async def recv(self) -> str:
        """The next frame the server sent; raises ``ConnectionClosed`` once it closed."""
        transport = self.ws.transport
        while True:
            sent = frames(bytes(transport.written))
            if self._read < len(sent):
                self._read += 1
                return sent[self._read - 1].decode()
            if self.ws.close_code is not None:
                raise ConnectionClosed(Close(self.ws.close_code, self.ws.close_reason), None)
            if self.task.done():
                raise ConnectionClosed(None, None)
            transport.wrote.clear()
            waiter = asyncio.ensure_future(transport.wrote.wait())
            await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    async def close(self) -> None:
        """The client goes away: its session ends and it leaves its channels."""
        self.ws.feed(None)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 5)
