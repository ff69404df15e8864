"""The server side of one WebSocket connection, driven by callbacks.

Sanic's own WebSocket implementation gives every connection two background
tasks (keepalive, closer), a frame assembler with its own events and queue,
and a new task for every ``recv()``: about 14 KB and one task creation per
inbound frame before the application sees anything. A feed server holds
thousands of mostly idle connections and fans frames out by writing
pre-encoded bytes straight to the transport, so it needs much less:

- inbound bytes go through ``websockets``' sans-I/O :class:`ServerProtocol`
  in ``data_received``; complete messages wait in a short list for
  :meth:`ServerWebSocket.recv`, the only coroutine, whose future is created
  only while the handler waits;
- keepalive is one timer per process (:class:`Keepalive`), not a task per
  connection; the closing deadline is a timer handle, set only when closing;
- control frames (pong, close) are written as soon as the protocol produces
  them; a peer that sends pings but does not read the pongs is closed with
  1013 once ``max_queue`` of them wait behind a full transport buffer, as a
  slow reader of data frames is (``outbox.py``).

The connection's HTTP protocol (Sanic's ``WebSocketProtocol``) keeps owning
the transport and forwards ``data_received``, ``eof_received`` and
``connection_lost`` here once :func:`accept` installed this object as its
``websocket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Iterable
from typing import Any, Protocol

from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol as WSProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..errors import CloseCode
from .outbox import WritableProtocol

__all__ = [
    "HANDSHAKE_HEADERS",
    "IOProtocol",
    "Keepalive",
    "ServerWebSocket",
    "accept",
    "handshake_headers",
    "text_frame",
]

log = logging.getLogger("sanic_feeds.websocket")
#: What ``websockets``' protocol logs: every frame at DEBUG, each connection's
#: opening and end at INFO.
protocol_log = logging.getLogger("sanic_feeds.websocket.protocol")

#: How long a peer has to answer our close frame, and then to let the TCP
#: connection finish, before it is cut off. A client that reads answers in
#: milliseconds; this bounds what one that does not can hold at shutdown.
_CLOSE_TIMEOUT_S = 2.0


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked server-to-client text frame carrying ``payload``.

    Built once per message and written as is to every subscriber's socket.
    """
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


#: Messages received but not yet read by the handler before the transport
#: stops reading from the socket (TCP then pushes back on the client).
_MAX_PENDING_MESSAGES = 16


#: The request headers ``websockets``' handshake reads (``ServerProtocol.process_request``).
HANDSHAKE_HEADERS = (
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "origin",
)


class HeaderLookup(Protocol):
    def getall(self, key: str, default: Iterable[str], /) -> Iterable[str]: ...


def handshake_headers(headers: HeaderLookup) -> list[tuple[str, str]]:
    """The request's :data:`HANDSHAKE_HEADERS`, each of its values, looked up by name.

    Not by iterating Sanic's headers (a ``CIMultiDict``): iterating makes it build, and
    keep for as long as the request lives, a case-insensitive key object for every
    header, about 650 bytes per connection.
    """
    return [(name, value) for name in HANDSHAKE_HEADERS for value in headers.getall(name, ())]


class IOProtocol(WritableProtocol, Protocol):
    """The connection's asyncio protocol: Sanic's ``WebSocketProtocol``, which
    forwards the connection's events to its ``websocket``."""

    websocket: Any
    #: What Sanic read of the connection and did not parse as the request.
    recv_buffer: bytearray


def accept(
    io_proto: IOProtocol,
    path: str,
    headers: Iterable[tuple[str, str]],
    *,
    max_message_bytes: int,
    keepalive: Keepalive | None,
    max_queue: int = 1000,
    close_timeout_s: float = _CLOSE_TIMEOUT_S,
) -> ServerWebSocket | Response:
    """Answer an upgrade request on ``io_proto``'s connection.

    On success the ``101 Switching Protocols`` response is written and the
    returned :class:`ServerWebSocket` receives the connection's bytes from
    then on. Otherwise nothing is written and the refusal (400, 426) is
    returned for the caller to send as an HTTP response.
    """
    transport = io_proto.transport
    if transport is None:
        raise ConnectionError("the connection closed during the upgrade")
    # Sanic parsed the HTTP request already: the protocol starts OPEN, so that
    # its parser expects frames, and only checks the request and builds the answer.
    ws_proto = _OpenServerProtocol(
        max_size=max_message_bytes, state=State.OPEN, logger=protocol_log
    )
    response = ws_proto.accept(Request(path, Headers(headers)))
    if response.status_code != 101:
        return response
    transport.write(response.serialize())
    ws = ServerWebSocket(
        ws_proto,
        io_proto,
        keepalive=keepalive,
        close_timeout_s=close_timeout_s,
        max_queue=max_queue,
    )
    io_proto.websocket = ws
    # Bytes the client sent right behind its request, before this 101 (RFC 6455 says it
    # must not), wait in Sanic's request buffer, which paused reading once they passed
    # REQUEST_BUFFER_SIZE: they are the connection's first frames.
    early = io_proto.recv_buffer
    if early:
        data = bytes(early)
        early.clear()
        ws.data_received(data)
    if not ws.reading_paused:
        transport.resume_reading()
    return ws


class _OpenServerProtocol(ServerProtocol):
    """A :class:`ServerProtocol` whose parser is the frame parser itself.

    ``ServerProtocol.parse`` reads the HTTP request when the protocol starts CONNECTING,
    then runs ``Protocol.parse`` inside itself (``yield from``): one generator more
    (256 bytes) per connection for as long as it lives. Sanic read the request already,
    so the protocol starts OPEN and that outer generator would only ever delegate.
    """

    parse = WSProtocol.parse


class Keepalive:
    """Pings every open connection of the process each ``interval_s`` and fails
    (1011) one whose pong has not come back within ``timeout_s``.

    One timer for all connections, ticking every half of the shorter of the
    two periods: a ping leaves up to half a period late and a silent peer is
    closed up to half a period after its deadline, which is what keepalive
    needs, at no cost per idle connection. ``timeout_s=None`` pings without
    ever giving up.
    """

    __slots__ = ("_handle", "_loop", "_sockets", "_tick_s", "interval_s", "timeout_s")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, interval_s: float, timeout_s: float | None
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the ping interval must be positive")
        self._loop = loop
        self.interval_s = interval_s
        self.timeout_s = timeout_s or None
        self._tick_s = min(interval_s, self.timeout_s or interval_s) / 2
        self._sockets: set[ServerWebSocket] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, ws: ServerWebSocket) -> None:
        self._sockets.add(ws)
        if self._handle is None:
            self._handle = self._loop.call_later(self._tick_s, self._tick)

    def discard(self, ws: ServerWebSocket) -> None:
        self._sockets.discard(ws)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = self._loop.time()
        interval_s, timeout_s = self.interval_s, self.timeout_s
        try:
            for ws in list(self._sockets):
                if ws.ws_proto.state is not State.OPEN:
                    # Closing already: nothing more to ask of it.
                    self._sockets.discard(ws)
                    continue
                try:
                    sent_at = ws.ping_sent_at
                    if sent_at is None:
                        if now - ws.last_ping_at >= interval_s:
                            ws.send_ping(now)
                    elif ws.reading_paused:
                        # Its pong may be waiting unread behind our own backlog.
                        continue
                    elif timeout_s is not None and now - sent_at >= timeout_s:
                        log.info("closing a connection whose peer did not answer a ping in time")
                        self._sockets.discard(ws)
                        ws.fail_connection(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                except Exception:
                    # One broken connection must not stop keepalive for the others.
                    log.exception("keepalive failed on a connection; dropping it")
                    self._sockets.discard(ws)
                    ws.fail_connection(CloseCode.INTERNAL_ERROR)
        finally:
            self._handle = (
                self._loop.call_later(self._tick_s, self._tick) if self._sockets else None
            )


class ServerWebSocket:
    """An open WebSocket connection, after the handshake.

    :meth:`recv` returns each message (``str`` for text, ``bytes`` for
    binary) in order and ``None`` once the connection is over, however it
    ended: messages the peer sent before its close frame are still returned
    first.

    The TCP connection closes once both sides are done: the peer's close frame
    (or EOF) came and the handler read what preceded it. :meth:`start_closing`
    sends a close frame and drops what was not read, then waits for the peer's
    answer; closing TCP under a peer that is still sending would reset the
    connection, and the peer could lose the close frame with its code. A peer
    that does not finish is cut off after ``close_timeout_s``.
    :meth:`fail_connection` closes TCP at once. Neither waits, and both may be
    called from any callback.

    Data frames are written by the caller straight to ``io_proto.transport``
    (pre-encoded frames); control frames by this class.
    """

    __slots__ = (
        "_close_deadline",
        "_closed",
        "_closing",
        "_control_backlog",
        "_eof",
        "_fragments",
        "_head",
        "_keepalive",
        "_messages",
        "_ready_in_a_row",
        "_waiter",
        "close_timeout_s",
        "io_proto",
        "last_ping_at",
        "loop",
        "max_queue",
        "ping_sent_at",
        "reading_paused",
        "ws_proto",
    )

    def __init__(
        self,
        ws_proto: ServerProtocol,
        io_proto: IOProtocol,
        *,
        keepalive: Keepalive | None,
        close_timeout_s: float,
        max_queue: int = 1000,
    ) -> None:
        self.ws_proto = ws_proto
        #: None once the TCP connection is gone.
        self.io_proto: IOProtocol | None = io_proto
        self.loop = asyncio.get_running_loop()
        self.close_timeout_s = close_timeout_s
        #: Control frames (pongs) that may wait behind a full transport buffer.
        self.max_queue = max_queue
        #: Control frames written while the transport's buffer was over its high-water mark.
        self._control_backlog = 0
        #: Waits for the end of the TCP connection, once someone waits for it.
        self._closed: asyncio.Future[None] | None = None
        #: Complete messages received; those from ``_head`` on are not read yet.
        self._messages: list[str | bytes] = []
        self._head = 0
        #: Frames of a fragmented message received so far.
        self._fragments: list[Frame] | None = None
        #: True once this side started closing: nothing more is read.
        self._closing = False
        #: True once the peer ended its side of the TCP connection.
        self._eof = False
        #: The handler's recv(), while it waits.
        self._waiter: asyncio.Future[None] | None = None
        #: recv() calls answered without waiting, since the last yield to the loop.
        self._ready_in_a_row = 0
        #: True while reading is paused because the handler is behind.
        self.reading_paused = False
        #: Loop time the last keepalive ping left (or the connection opened).
        self.last_ping_at = self.loop.time()
        #: Loop time the outstanding ping left, until its pong arrives.
        self.ping_sent_at: float | None = None
        #: Closes the transport if the handler does not read to the end in time
        #: (after the peer's close), then aborts it if the peer does not let it finish.
        self._close_deadline: asyncio.TimerHandle | None = None
        self._keepalive = keepalive
        if keepalive is not None:
            keepalive.add(self)

    # -- what the handler calls

    async def recv(self) -> str | bytes | None:
        """The next message, or ``None`` once the connection is over."""
        while self._head == len(self._messages):
            if self.ws_proto.state is not State.OPEN or self._closing:
                self._settle()
                return None
            self._ready_in_a_row = 0
            waiter = self._waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        messages = self._messages
        message = messages[self._head]
        self._head += 1
        if self._head == len(messages):
            messages.clear()
            self._head = 0
        if self.reading_paused and len(messages) - self._head < _MAX_PENDING_MESSAGES // 2:
            self._resume_reading()
        self._ready_in_a_row += 1
        if self._ready_in_a_row >= _MAX_PENDING_MESSAGES:
            # A client that pipelines many commands in one write must not hold
            # the loop: let the flusher and the other connections run.
            self._ready_in_a_row = 0
            await asyncio.sleep(0)
        return message

    def start_closing(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Send a close frame with ``code`` and drop what was received and not read
        yet (RFC 6455 7.1.7); the TCP connection closes when the peer answers.
        Idempotent."""
        self._closing = True
        self._messages.clear()
        self._head = 0
        self._fragments = None
        ws_proto = self.ws_proto
        if ws_proto.state is State.OPEN:
            with contextlib.suppress(InvalidState):  # the protocol moved on in between
                ws_proto.send_close(code, reason)
            self.write_pending()
        if self.reading_paused:
            self._resume_reading()  # the peer's answer must be read to be seen
        self._settle()
        self._wake()

    def fail_connection(self, code: int = CloseCode.INTERNAL_ERROR, reason: str = "") -> bool:
        """:meth:`start_closing`, and close the TCP connection now, without waiting
        for the peer: for a peer that stopped answering, or a server that stops."""
        self.start_closing(code, reason)
        self._close_transport()
        return True

    def end_connection(self, code: int = CloseCode.NORMAL, reason: str = "") -> bool:
        """What Sanic calls when the connection's HTTP task ends."""
        self.start_closing(code, reason)
        return True

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close with ``code`` and wait for the TCP connection to end: the peer has
        ``close_timeout_s`` to answer, then as long again before the connection is
        aborted. Sanic calls it on every connection when it stops."""
        self.start_closing(code, reason)
        if self.io_proto is None:
            return
        if self._closed is None:
            self._closed = self.loop.create_future()
        # The transport is aborted by then if the peer did not cooperate.
        await asyncio.shield(self._closed)

    @property
    def close_code_sent(self) -> int | None:
        """The code of the close this side started (ours, or the protocol's on a bad
        frame), None when the peer closed first or no close frame left."""
        ws_proto = self.ws_proto
        sent = ws_proto.close_sent
        if sent is None or ws_proto.close_rcvd_then_sent:
            return None
        return int(sent.code)

    # -- what the HTTP protocol forwards

    def data_received(self, data: bytes) -> None:
        ws_proto = self.ws_proto
        ws_proto.receive_data(data)
        events = ws_proto.events_received()
        self.write_pending()
        for event in events:
            if isinstance(event, Frame):
                self._on_frame(event)
        unread = len(self._messages) - self._head
        if unread >= _MAX_PENDING_MESSAGES and not self.reading_paused:
            self.reading_paused = True
            transport = self._transport()
            if transport is not None:
                transport.pause_reading()
        if ws_proto.state is not State.OPEN:
            # Closing: the peer's close frame (answered already), or ours, or a
            # broken protocol. What came before it is still the handler's to read.
            self._settle()
        if unread or ws_proto.state is not State.OPEN:
            self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self.ws_proto.receive_eof()
        self._settle()
        self._wake()
        return True  # the transport stays open until recv() has read everything

    def connection_lost(self, exc: Exception | None) -> None:
        ws_proto = self.ws_proto
        if ws_proto.state is not State.CLOSED:
            # The peer vanished without a closing handshake: 1006.
            ws_proto.state = State.CLOSED
        if self._close_deadline is not None:
            self._close_deadline.cancel()
            self._close_deadline = None
        if self._keepalive is not None:
            self._keepalive.discard(self)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self.io_proto = None
        self._wake()

    # -- internals

    def write_pending(self) -> None:
        """Write what the protocol produced (pong, close frame, end of stream)."""
        chunks = self.ws_proto.data_to_send()
        transport = self._transport()
        if transport is None or not chunks or transport.is_closing():
            return
        for chunk in chunks:
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                # The protocol's end of stream: half-close, so that the peer
                # sees it and closes, while what it still sends is read.
                transport.write_eof()
        if self._closing:
            return
        # A peer that pings without reading the pongs would grow this buffer without
        # bound: count what it leaves unread, like the outbox counts data frames.
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            self._control_backlog += len(chunks)
            if self._control_backlog > self.max_queue:
                log.info("closing a connection that does not read its pongs")
                self.fail_connection(CloseCode.TRY_AGAIN_LATER, "too slow, not reading")
        else:
            self._control_backlog = 0

    def _on_frame(self, frame: Frame) -> None:
        if self._closing:
            return
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._complete([frame])
            else:
                self._fragments = [frame]
        elif opcode is Opcode.CONT:
            fragments = self._fragments
            if fragments is None:  # the protocol refuses this before we see it
                return
            fragments.append(frame)
            if frame.fin:
                self._fragments = None
                self._complete(fragments)
        elif (
            opcode is Opcode.PONG
            and self.ping_sent_at is not None
            and frame.data == struct.pack("!d", self.ping_sent_at)
        ):
            self.ping_sent_at = None
        # PING is answered by the protocol itself; CLOSE is seen through its state.

    def _complete(self, frames: list[Frame]) -> None:
        data = frames[0].data if len(frames) == 1 else b"".join(f.data for f in frames)
        if frames[0].opcode is Opcode.BINARY:
            self._messages.append(bytes(data))
            return
        try:
            self._messages.append(bytes(data).decode())
        except UnicodeDecodeError:
            self.start_closing(1007, "invalid UTF-8 in a text frame")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _transport(self) -> asyncio.Transport | None:
        io_proto = self.io_proto
        return None if io_proto is None else io_proto.transport

    def _resume_reading(self) -> None:
        self.reading_paused = False
        transport = self._transport()
        if transport is not None:
            transport.resume_reading()

    def _settle(self) -> None:
        """Close the TCP connection once the peer is done and its messages are read;
        until then, closing has a deadline."""
        peer_done = self._eof or self.ws_proto.close_rcvd is not None
        if peer_done and (self._closing or self._head == len(self._messages)):
            self._close_transport()
        elif self._close_deadline is None and self._transport() is not None:
            self._close_deadline = self.loop.call_later(self.close_timeout_s, self._close_transport)

    def _close_transport(self) -> None:
        transport = self._transport()
        if transport is None or transport.is_closing():
            return
        if self._close_deadline is not None:
            self._close_deadline.cancel()
        # close() flushes what is buffered first; a peer that stops reading
        # would hold that forever, hence the deadline.
        transport.close()
        self._close_deadline = self.loop.call_later(self.close_timeout_s, transport.abort)

    def send_ping(self, now: float) -> None:
        """Send a keepalive ping (the keepalive calls it); its payload is ``now``."""
        if self.ws_proto.state is not State.OPEN:
            return
        self.last_ping_at = self.ping_sent_at = now
        self.ws_proto.send_ping(struct.pack("!d", now))
        self.write_pending()
