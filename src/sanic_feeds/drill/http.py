"""A small asyncio HTTP/1.1 client with keep-alive, for the drill's publishers and probes.

Publishers behind a load balancer keep their connections open; a draining
instance must close them (``Connection: close``), and the drill checks that it
does. So this client reuses a connection until the server says ``close``, and
drops it on any error or timeout. It speaks to sanic-feeds only: responses
carry a ``Content-Length`` (no chunked bodies), requests are small.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["HttpClient", "HttpError", "HttpReply"]

_MAX_HEAD = 64 * 1024


class HttpError(Exception):
    """The request failed before a complete response: connection refused, reset,
    closed early, timed out, or a response this client cannot read."""


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: bytes
    #: The server closes the connection after this response.
    closes: bool


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class HttpClient:
    """Requests to one origin (``http://host:port`` or ``ws://host:port``), over
    keep-alive connections pooled here; each request times out after ``timeout_s``."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if not parts.hostname or not parts.port:
            raise ValueError(f"{base_url}: need host and port")
        self._host, self._port = parts.hostname, parts.port
        self._timeout_s = timeout_s
        self._idle: list[_Connection] = []

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> HttpReply:
        """Send one request and read its response; raises :class:`HttpError`."""
        connection = self._idle.pop() if self._idle else None
        try:
            async with asyncio.timeout(self._timeout_s):
                if connection is None:
                    connection = await asyncio.open_connection(self._host, self._port)
                reply = await self._exchange(connection, method, path, body, headers or {})
        except (OSError, EOFError, TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
            if connection is not None:
                connection[1].transport.abort()
            raise HttpError(f"{method} {path} on {self._host}:{self._port}: {exc!r}") from None
        if reply.closes:
            connection[1].transport.abort()
        else:
            self._idle.append(connection)
        return reply

    async def _exchange(
        self,
        connection: _Connection,
        method: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
    ) -> HttpReply:
        reader, writer = connection
        head = [f"{method} {path} HTTP/1.1", f"Host: {self._host}:{self._port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        raw_head = await reader.readuntil(b"\r\n\r\n")
        if len(raw_head) > _MAX_HEAD:
            raise ValueError("response head too large")
        status_line, *lines = raw_head.decode("latin-1").rstrip("\r\n").split("\r\n")
        version, _, rest = status_line.partition(" ")
        status = int(rest[:3])
        fields = {}
        for line in lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        length = int(fields.get("content-length", "0"))
        payload = await reader.readexactly(length) if length else b""
        closes = fields.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        return HttpReply(status, payload, closes)

    def close(self) -> None:
        """Drop every idle connection."""
        for _, writer in self._idle:
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._idle.clear()
