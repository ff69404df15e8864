"""A read-only WebSocket client for the bench's subscribers: the load generator's hot path.

The ``websockets`` asyncio client spends most of its time per frame in
Python machinery a subscriber of the bench does not need (the sans-I/O
parser's generators, the message assembler, a future per ``recv``): with
1000 subscribers on two cores, the load generator saturated before the
servers it measured. A bench subscriber only reads text frames, so
:class:`FeedSocket` parses frames straight out of ``data_received`` and
hands each payload to a callback, with no task, future or copy per frame.

It speaks just enough of RFC 6455 for that: the opening handshake (checked
against ``Sec-WebSocket-Accept``), unmasked server frames of any length,
fragmented messages, answering pings, and the closing handshake. Frames it
sends (pong, close) are masked, built by ``websockets``' own serializer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from websockets.exceptions import ProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.utils import accept_key, generate_key

__all__ = ["FeedSocket", "HandshakeRefused", "open_socket"]

#: Close code when the TCP connection ended without a closing handshake.
ABNORMAL_CLOSURE = 1006
#: Close code when the peer broke the protocol.
PROTOCOL_ERROR = 1002
#: Largest HTTP response head accepted during the handshake.
_MAX_RESPONSE_HEAD = 16 * 1024


class HandshakeRefused(Exception):
    """The server did not upgrade the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}".rstrip())
        self.status = status


class FeedSocket(asyncio.Protocol):
    """One client connection that only reads.

    ``on_text`` is called with the payload of every complete text (or
    binary) message, synchronously from ``data_received``; it may be
    replaced at any time. ``closed`` resolves to the close code the server
    sent (1006 when the connection ended without one).
    """

    def __init__(self, host: str, path: str, on_text: Callable[[bytes], None]) -> None:
        loop = asyncio.get_running_loop()
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        #: Resolves once the server accepted the upgrade.
        self.opened: asyncio.Future[None] = loop.create_future()
        #: Resolves to the server's close code once the connection is over.
        self.closed: asyncio.Future[int] = loop.create_future()
        self.close_reason = ""
        self._key = generate_key()
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key}\r\n"
            "Sec-WebSocket-Version: 13\r\nUser-Agent: sanic-feeds-bench\r\n\r\n"
        ).encode()
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._close_code: int | None = None
        self._close_sent = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self.opened.done():
            self._read_frames(self._buffer + data if self._buffer else data)
        else:
            self._read_handshake(self._buffer + data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(
                exc or ConnectionResetError("the server closed the connection during the handshake")
            )
        if not self.closed.done():
            self.closed.set_result(self._close_code or ABNORMAL_CLOSURE)

    # -- sending

    async def close(self, code: int = 1000, timeout_s: float = 5.0) -> None:
        """Start the closing handshake and wait for the server to end the connection."""
        transport = self.transport
        if transport is None or self.closed.done():
            return
        self._send_close(code)
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout_s)
        except TimeoutError:
            transport.abort()

    def _send(self, opcode: Opcode, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            frame = Frame(opcode, payload)
            self.transport.write(frame.serialize(mask=True, extensions=[]))

    def _send_close(self, code: int) -> None:
        if not self._close_sent:
            self._close_sent = True
            self._send(Opcode.CLOSE, Close(code, "").serialize())

    # -- reading

    def _read_handshake(self, data: bytes) -> None:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > _MAX_RESPONSE_HEAD:
                self._fail_handshake(ConnectionError("the server's response head is too large"))
            else:
                self._buffer = data
            return
        head, rest = data[:end].decode("latin-1"), data[end + 4 :]
        status_line, *header_lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status != 101:
            self._fail_handshake(HandshakeRefused(status, parts[2] if len(parts) > 2 else ""))
            return
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != accept_key(self._key):
            self._fail_handshake(ConnectionError("a wrong Sec-WebSocket-Accept"))
            return
        self._buffer = b""
        self.opened.set_result(None)
        if rest:
            self._read_frames(rest)

    def _fail_handshake(self, exc: Exception) -> None:
        self._buffer = b""
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def _read_frames(self, buf: bytes) -> None:
        # The hot loop: one pass over what arrived, one slice per payload.
        size = len(buf)
        pos = 0
        while size - pos >= 2:
            first, length = buf[pos], buf[pos + 1]
            if length & 0x80:
                self._protocol_error("the server masked a frame")
                return
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4])
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10])
                head = 10
            end = pos + head + length
            if end > size:
                break
            payload = buf[pos + head : end]
            pos = end
            opcode = first & 0x0F
            if first & 0x80 and 0 < opcode < 3:
                self.on_text(payload)  # the common case: a whole text or binary message
            else:
                self._control_or_fragment(first, opcode, payload)
        self._buffer = buf[pos:] if pos < size else b""

    def _control_or_fragment(self, first: int, opcode: int, payload: bytes) -> None:
        if opcode == Opcode.PING:
            self._send(Opcode.PONG, payload)
        elif opcode == Opcode.PONG:
            pass
        elif opcode == Opcode.CLOSE:
            try:
                close = Close.parse(payload) if payload else Close(1005, "")
            except (ProtocolError, UnicodeDecodeError):
                self._protocol_error("the server sent a malformed close frame")
                return
            self._close_code, self.close_reason = close.code, close.reason
            self._send_close(close.code if close.code != 1005 else 1000)
            if self.transport is not None:
                self.transport.close()
        elif opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            self._fragments.append(payload)
            if first & 0x80:
                message, self._fragments = b"".join(self._fragments), []
                self.on_text(message)
        else:
            self._protocol_error(f"unknown opcode {opcode}")

    def _protocol_error(self, why: str) -> None:
        self._close_code, self.close_reason = PROTOCOL_ERROR, why
        if self.transport is not None:
            self.transport.abort()


async def open_socket(url: str, on_text: Callable[[bytes], None]) -> FeedSocket:
    """Connect to ``ws://host:port/path?query`` and complete the opening handshake."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"{url}: only ws://HOST:PORT/... URLs are supported")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    port = parts.port or 80
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{port}"
    loop = asyncio.get_running_loop()
    socket = FeedSocket(host, path, on_text)
    transport, _ = await loop.create_connection(lambda: socket, parts.hostname, port)
    try:
        await socket.opened
    except BaseException:
        transport.abort()
        raise
    return socket
