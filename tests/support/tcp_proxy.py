"""A TCP proxy in front of Redis that fails the ways networks fail.

``lose_reply_to(b"EVALSHA")`` arms it: the next connection that sends a
chunk containing those bytes has the command delivered to Redis, which runs
it, and then, instead of the reply, the connection is cut. That is the case
idempotency keys exist for: the caller cannot know whether its command ran.

``deafen_open_connections()``: every connection open now keeps its socket
but hears nothing more from Redis (a half-open TCP connection, a partition);
connections made afterwards work.

``interleave(b"EVALSHA", between)`` arms it: the next chunk holding two or more of
those commands (a pipeline) reaches Redis in two parts; once Redis has answered the
first command, ``between()`` runs (another client's command, say), then the rest goes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

__all__ = ["RedisProxy"]


class RedisProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._armed: bytes | None = None
        self._interleaved: tuple[bytes, Callable[[], Awaitable[object]]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: One Event per open connection; set, it drops what Redis sends on it.
        self._connections: set[asyncio.Event] = set()
        self.replies_lost = 0
        #: Pipelines cut in two by ``interleave``.
        self.interleaved = 0
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_reply_to(self, command: bytes) -> None:
        self._armed = command

    def interleave(self, command: bytes, between: Callable[[], Awaitable[object]]) -> None:
        self._interleaved = (b"\r\n" + command + b"\r\n", between)

    def deafen_open_connections(self) -> int:
        """Make every open connection deaf; returns how many there were."""
        for deaf in self._connections:
            deaf.set()
        return len(self._connections)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_r, upstream_w = await asyncio.open_connection(*self._upstream)
        reply_lost = asyncio.Event()
        deaf = asyncio.Event()
        self._connections.add(deaf)

        answered = asyncio.Event()

        async def to_redis() -> None:
            while chunk := await client_r.read(65536):
                if self._armed is not None and self._armed in chunk:
                    self._armed = None
                    reply_lost.set()
                if (split := self._split(chunk)) is not None:
                    first, rest, between = split
                    answered.clear()
                    upstream_w.write(first)
                    await upstream_w.drain()
                    await answered.wait()
                    await between()
                    chunk = rest
                upstream_w.write(chunk)
                await upstream_w.drain()

        async def to_client() -> None:
            while chunk := await upstream_r.read(65536):
                answered.set()
                if reply_lost.is_set():
                    self.replies_lost += 1
                    return
                if deaf.is_set():
                    continue
                client_w.write(chunk)
                await client_w.drain()

        try:
            pumps = [asyncio.create_task(to_redis()), asyncio.create_task(to_client())]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
        finally:
            for writer in (client_w, upstream_w):
                writer.transport.abort()
            self._connections.discard(deaf)
            self._tasks.discard(task)

    def _split(self, chunk: bytes) -> tuple[bytes, bytes, Callable[[], Awaitable[object]]] | None:
        """``chunk`` cut before its second armed command, when it holds two."""
        if self._interleaved is None:
            return None
        command, between = self._interleaved
        first = chunk.find(command)
        second = chunk.find(command, first + 1) if first >= 0 else -1
        if second < 0:
            return None
        self._interleaved = None
        self.interleaved += 1
        # Back to the start of that command's RESP array: "*<n>\r\n$<len>".
        cut = chunk.rfind(b"*", 0, second)
        return chunk[:cut], chunk[cut:], between
