"""Per-connection bounded outbound queues, and the flusher that drains them.

Fan-out only ever calls :meth:`Outbox.put`, which never awaits: it queues a
pre-built frame and asks the flusher to write this connection's queue once
the current burst of dispatching is over. All frames queued in one loop
iteration leave in a single ``transport.write``. When the socket does not
keep up, frames wait in the queue (the transport's buffer stays small);
past ``max_frames`` the connection is closed with 1013 and nobody else
notices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from websockets.protocol import State

from . import metrics

__all__ = ["Flusher", "Outbox", "Session", "WritableProtocol"]

log = logging.getLogger("sanic_feeds.outbox")


class WritableProtocol(Protocol):
    """The slice of Sanic's connection protocol an outbox needs."""

    transport: asyncio.Transport | None

    async def send(self, data: bytes) -> None:
        """Write ``data`` once the transport accepts writes again (flow control)."""


class Session(Protocol):
    """The WebSocket protocol state of a connection (``websockets``' sans-I/O protocol)."""

    @property
    def state(self) -> State:
        """OPEN until the closing handshake starts; data frames may not follow it."""


class _AlwaysOpen:
    state = State.OPEN


_ALWAYS_OPEN: Session = _AlwaysOpen()


class Flusher:
    """Writes every outbox that received frames: at the end of the current loop
    iteration, and at most once per ``tick_s``.

    Each write to a socket is a system call, and on a busy server it is most of what a
    delivery costs. A message that comes when nothing was written for ``tick_s`` goes
    out at once; while messages keep coming, each connection's frames of one tick
    leave in one write, so that under load the writes per delivery fall, and the
    latency this adds is bounded by ``tick_s``. ``tick_s`` 0: every loop iteration.
    """

    __slots__ = ("_dirty", "_flushed_at", "_loop", "_scheduled", "_tick_s")

    def __init__(self, loop: asyncio.AbstractEventLoop, tick_s: float = 0.0) -> None:
        self._loop = loop
        self._tick_s = tick_s
        self._dirty: list[Outbox] = []
        self._scheduled = False
        self._flushed_at = -tick_s

    def schedule(self, outbox: Outbox) -> None:
        self._dirty.append(outbox)
        if not self._scheduled:
            self._scheduled = True
            wait_s = self._flushed_at + self._tick_s - self._loop.time()
            if wait_s > 0:
                self._loop.call_later(wait_s, self._flush)
            else:
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        self._flushed_at = self._loop.time()
        for outbox in dirty:
            try:
                outbox.flush()
            except Exception:
                # One broken connection must not keep the others from their frames.
                log.exception("dropping a connection whose socket failed")
                outbox.abort("its socket failed")


class Outbox:
    """The outbound queue of one connection, at most ``max_frames`` long.

    ``on_abort(reason)`` is called (once, synchronously) when the queue overflows
    or the hub gives the connection up (:meth:`abort`); it must close the
    connection with 1013 without awaiting.
    """

    __slots__ = (
        "_drain_task",
        "_flusher",
        "_frames",
        "_max_frames",
        "_on_abort",
        "_protocol",
        "_scheduled",
        "_session",
        "closed",
    )

    def __init__(
        self,
        protocol: WritableProtocol,
        flusher: Flusher,
        max_frames: int,
        on_abort: Callable[[str], None],
        session: Session = _ALWAYS_OPEN,
    ) -> None:
        self._protocol = protocol
        #: Its state leaves OPEN once the WebSocket closing handshake started.
        self._session = session
        self._flusher = flusher
        self._max_frames = max_frames
        self._on_abort = on_abort
        self._frames: list[bytes] = []
        #: True while the flusher has this outbox in its list.
        self._scheduled = False
        #: Waits for the transport to accept writes again; None when writable.
        self._drain_task: asyncio.Task[None] | None = None
        #: Once closed, frames are dropped silently.
        self.closed = False

    def put(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame. Never blocks, never raises."""
        if self.closed:
            return
        frames = self._frames
        frames.append(frame)
        if len(frames) > self._max_frames:
            # Only frames the socket does not take count against the limit:
            # a burst queued within one loop iteration goes out now if it can.
            self.flush()
            if len(frames) > self._max_frames:
                self._overflow()
            return
        if not self._scheduled:
            self._scheduled = True
            self._flusher.schedule(self)

    def put_batch(self, frames: list[bytes]) -> None:
        """Queue a batch (a recovery) and write it at once: its length alone is not an
        overflow, only what still waits after the write counts against ``max_frames``."""
        if self.closed or not frames:
            return
        self._frames.extend(frames)
        self.flush()
        if len(self._frames) > self._max_frames:
            self._overflow()

    def flush(self) -> None:
        # Called once per connection for every burst a channel fans out: the
        # hottest Python in the server, kept to the checks that matter.
        self._scheduled = False
        frames = self._frames
        if not frames or self.closed or self._drain_task is not None:
            return
        transport = self._protocol.transport
        if transport is None or transport.is_closing() or self._session.state is not State.OPEN:
            # Gone, or the closing handshake started: data frames may not follow.
            self.close()
            return
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            # The peer is not reading fast enough: keep frames here, where
            # they are counted, until the transport drains.
            self._drain_task = asyncio.create_task(self._wait_writable())
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        frames.clear()
        try:
            transport.write(data)
        except (RuntimeError, OSError):
            # The socket was half-closed or reset under us; the connection's
            # handler finds out on its own.
            self.close()

    async def _wait_writable(self) -> None:
        try:
            await self._protocol.send(b"")
        except Exception:
            # The connection is gone; its handler will notice on its own.
            self._drain_task = None
            self.close()
            return
        self._drain_task = None
        self.flush()

    @property
    def queued(self) -> int:
        return len(self._frames)

    def _overflow(self) -> None:
        if not self.closed:
            metrics.SLOW_CLIENT_CLOSES.inc()
        self.abort()

    def abort(self, reason: str = "too slow") -> None:
        """Give the connection up: it is closed with 1013 and may recover with ``since``."""
        if not self.closed:
            self.close()
            self._on_abort(reason)

    def close(self) -> None:
        """Drop queued frames and accept no more. Idempotent."""
        self.closed = True
        self._frames.clear()
        task, self._drain_task = self._drain_task, None
        if task is not None:
            task.cancel()
