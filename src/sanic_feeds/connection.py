"""One client connection: its id, wire format, outbox and limits."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, Protocol

from sanic.exceptions import WebsocketClosed
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.server import ServerProtocol

from .errors import CloseCode, ErrorCode
from .outbox import Flusher, Outbox, WritableProtocol
from .protocol import WireFormat, encode_error, text_frame
from .ratelimit import RateLimiter

__all__ = ["Connection", "WebSocket", "new_client_id"]


class WebSocket(Protocol):
    """The slice of Sanic's ``WebsocketImplProtocol`` a connection uses."""

    io_proto: WritableProtocol | None
    ws_proto: ServerProtocol
    connection_lost_waiter: asyncio.Future[None] | None

    async def recv(self) -> str | bytes | None: ...

    def fail_connection(self, code: int = 1006, reason: str = "") -> bool: ...


def new_client_id() -> str:
    return secrets.token_hex(8)


class Connection:
    """State of one WebSocket client, owned by its handler task.

    Everything sent to the client goes through :attr:`outbox`, so replies and
    publications leave in the order they were queued.
    """

    __slots__ = (
        "_interrupted",
        "_receiving",
        "channels",
        "closed",
        "id",
        "info",
        "limiter",
        "outbox",
        "task",
        "wire_format",
        "ws",
    )

    def __init__(
        self,
        ws: WebSocket,
        flusher: Flusher,
        *,
        wire_format: WireFormat,
        max_queue: int,
        limiter: RateLimiter,
        client_id: str | None = None,
        info: Any = None,
    ) -> None:
        if ws.io_proto is None:
            raise RuntimeError("the WebSocket has no transport")
        self.ws = ws
        self.id = client_id or new_client_id()
        self.info = info if info is not None else {}
        self.wire_format = wire_format
        self.limiter = limiter
        #: Channels this connection is subscribed to.
        self.channels: set[str] = set()
        self.closed = False
        #: The handler task, interrupted when the connection ends while it
        #: waits for a frame that would never come.
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self._receiving = False
        self._interrupted = False
        if ws.connection_lost_waiter is not None:
            # Sanic's recv() is not woken when the TCP connection drops
            # without a close frame; this is what wakes it.
            ws.connection_lost_waiter.add_done_callback(lambda _: self._interrupt_receive())
        self.outbox = Outbox(
            ws.io_proto,
            flusher,
            max_queue,
            on_abort=lambda: self.close(
                CloseCode.TRY_AGAIN_LATER, "too slow, resubscribe with since"
            ),
            session=ws.ws_proto,
        )

    async def receive(self) -> str | bytes | None:
        """The next frame from the client, or None once the connection is over."""
        if self.closed or self.ws.ws_proto.state is not State.OPEN:
            return None
        self._receiving = True
        try:
            return await self.ws.recv()
        except (ConnectionClosed, WebsocketClosed):
            return None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._interrupted and task is not None:
                self._interrupted = False
                task.uncancel()
                return None
            if task is not None and task.cancelling():
                raise  # a real cancellation: the server is stopping
            return None  # how Sanic's recv() reports a close frame from the client
        finally:
            self._receiving = False

    def _interrupt_receive(self) -> None:
        task = self.task
        if self._receiving and task is not None and not task.done() and not self._interrupted:
            self._interrupted = True
            task.cancel()

    def send(self, payload: bytes) -> None:
        """Queue one text frame; never waits."""
        self.outbox.put(text_frame(payload))

    def send_error(self, code: ErrorCode, message: str, command_id: Any = None) -> None:
        """Tell a JSON client what went wrong; raw clients are told nothing (SPEC)."""
        if self.wire_format is WireFormat.JSON:
            self.send(encode_error(code, message, command_id))

    def close(self, code: CloseCode, reason: str = "") -> None:
        """Close with ``code`` without waiting: frames queued so far go first."""
        if self.closed:
            return
        self.closed = True
        if not self.outbox.closed:
            self.outbox.flush()
            self.outbox.close()
        self.ws.fail_connection(int(code), reason)
        if self.task is not asyncio.current_task():
            self._interrupt_receive()
