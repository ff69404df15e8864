"""One client connection: its id, wire format, outbox and limits."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..auth import Identity
from ..codec import WireFormat, encode_error
from ..errors import CloseCode, ErrorCode, FeedsError, RateLimitedTooOften
from ..events import StreamPosition
from ..permissions import Access
from ..ratelimit import RateLimiter
from . import metrics
from .outbox import Flusher, Outbox, Session, WritableProtocol
from .websocket import text_frame

__all__ = ["Connection", "Greet", "WebSocket", "new_client_id"]

#: Called with ``(position, recovered)`` when a subscription starts, right before
#: anything of the channel can reach the connection (to queue ``subscribed`` first).
Greet = Callable[[StreamPosition, bool], None]


class WebSocket(Protocol):
    """What a connection needs of its socket (:class:`~.websocket.ServerWebSocket`)."""

    @property
    def io_proto(self) -> WritableProtocol | None: ...

    @property
    def ws_proto(self) -> Session: ...

    async def recv(self) -> str | bytes | None: ...

    @property
    def close_code_sent(self) -> int | None:
        """The code of the close this side started, None when it did not (yet)."""

    def start_closing(self, code: int = 1000, reason: str = "") -> None: ...


def new_client_id() -> str:
    return secrets.token_hex(8)


class Connection:
    """State of one WebSocket client, owned by its handler task.

    Everything sent to the client goes through :attr:`outbox`, so replies and
    publications leave in the order they were queued.
    """

    __slots__ = (
        "access",
        "channels",
        "close_code",
        "closed",
        "earned_close",
        "id",
        "identity",
        "info",
        "limiter",
        "outbox",
        "subscribe_limiter",
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
        access: Access,
        identity: Identity | None = None,
        client_id: str | None = None,
    ) -> None:
        if ws.io_proto is None:
            raise RuntimeError("the WebSocket has no transport")
        self.ws = ws
        self.id = client_id or new_client_id()
        #: Who the connection is (None: it showed no identity); ``refresh`` replaces it.
        self.identity = identity
        #: What it may do, from ``identity``.
        self.access = access
        #: What presence and ``join`` show of it: its identity's ``info``, fixed at connect.
        self.info = identity.info if identity is not None and identity.info is not None else {}
        self.wire_format = wire_format
        #: Counts its publishes (``--rate-limit``).
        self.limiter = limiter
        #: Counts its ``subscribe`` commands, apart from its publishes; made with the
        #: first (most connections never send one).
        self.subscribe_limiter: RateLimiter | None = None
        #: Channels this connection is subscribed to.
        self.channels: set[str] = set()
        self.closed = False
        #: It went on over its rate limit: the 1008 waits for its turn to be sent
        #: (``RateLimitedTooOften``), and nothing it sends until then takes effect.
        self.earned_close = False
        #: The code the server closed it with (None: it did not, or not yet).
        self.close_code: int | None = None
        #: The handler task, which the server waits for when it drains.
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self.outbox = Outbox(
            ws.io_proto,
            flusher,
            max_queue,
            on_abort=self._close_given_up,
            session=ws.ws_proto,
        )

    def _close_given_up(self, reason: str) -> None:
        # A bound method, not a closure: no function object and cell per connection.
        self.close(CloseCode.TRY_AGAIN_LATER, f"{reason}, resubscribe with since")

    def receive(self) -> Awaitable[str | bytes | None]:
        """The next frame from the client, or None once the connection is over."""
        # Returns the socket's own coroutine: no frame of ours waits with it.
        return self.ws.recv()

    def text_of(self, frame: str | bytes | None) -> str | None:
        """The text of a frame :meth:`receive` returned, or None when the session is over:
        the connection ended, or it sent a binary frame (closed with 1003)."""
        if isinstance(frame, bytes):
            self.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
            return None
        return frame

    def send(self, payload: bytes) -> None:
        """Queue one text frame; never waits."""
        self.outbox.put(text_frame(payload))

    def send_error(self, code: ErrorCode, message: str, command_id: Any = None) -> None:
        """Tell a JSON client what went wrong; raw clients are told nothing
        (docs/protocol.md, "Raw format")."""
        metrics.ERRORS.labels(code.value).inc()
        if self.wire_format is WireFormat.JSON:
            self.send(encode_error(code, message, command_id))

    def send_failure(self, error: FeedsError, command_id: Any = None) -> None:
        """:meth:`send_error` for ``error``, with what a client may be told of it; for
        ``RateLimitedTooOften``, the close with 1008 instead."""
        if isinstance(error, RateLimitedTooOften):
            self.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
            return
        self.send_error(error.code, error.public_message, command_id)

    def close(self, code: CloseCode, reason: str = "") -> None:
        """Close with ``code`` without waiting: frames queued so far go first."""
        if self.closed:
            return
        self.closed = True
        self.close_code = int(code)
        if not self.outbox.closed:
            self.outbox.flush()
            self.outbox.close()
        # Wakes the handler's receive() too.
        self.ws.start_closing(int(code), reason)
