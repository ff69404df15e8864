"""A connection's publishes in flight: the next frame is read while earlier publishes
wait for the broker, and their outcomes reach the client in the order it sent them.

Read one frame, publish it, wait for the broker, read the next: a client's rate is then
capped at one publish per broker round trip, and on a busy instance, where that round
trip takes a loop iteration or more, a chat room's publisher falls behind while its
frames wait in the socket. Here up to ``limit`` publishes of one connection overlap.
What comes before the broker (the checks, the app's publish hook) runs one publish at a
time, in the client's order: each waits until the one before was handed to the broker
(``Node.publish_from``'s ``on_handed``). Only the broker's round trips overlap, and the
broker takes the publishes in the order it was handed them. Each reply waits for the
previous one, so acks and errors keep the client's order too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import CloseCode, FeedsError
from ..events import StreamPosition
from .connection import Connection

__all__ = ["PublishWindow"]

log = logging.getLogger("sanic_feeds.server")

#: What to send once a publish is done: given its position (None: nothing to say).
Reply = Callable[[StreamPosition | None], None]
#: Starts one publish; calls ``on_handed`` once the broker has the message in its order.
Publish = Callable[..., Awaitable[StreamPosition | None]]


class PublishWindow:
    """At most ``limit`` publishes of ``conn`` in flight (1: one at a time, in line)."""

    __slots__ = ("_conn", "_handed", "_last", "_limit", "_running")

    def __init__(self, conn: Connection, limit: int) -> None:
        self._conn = conn
        self._limit = limit
        #: Publishes in flight; made with the first (an idle connection holds none).
        self._running: set[asyncio.Task[None]] | None = None
        #: The publish started last: the next one replies after it.
        self._last: asyncio.Task[None] | None = None
        #: Set once the publish started last was handed to the broker (or failed
        #: before): the next one waits for it before its checks and hook.
        self._handed: asyncio.Future[None] | None = None

    async def submit(self, publish: Publish, reply: Reply, command_id: Any = None) -> None:
        """Start ``publish(on_handed=...)``; returns once the window has room for the next.

        ``reply`` runs with its outcome, after the replies of the publishes started
        before; a ``FeedsError`` is sent as an ``error`` (with ``command_id``).
        """
        if self._limit <= 1:
            try:
                reply(await publish())
            except FeedsError as exc:
                self._conn.send_failure(exc, command_id)
            return
        running = self._running
        if running is None:
            running = self._running = set()
        while len(running) >= self._limit:
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        handed = asyncio.get_running_loop().create_future()
        run = self._run(publish, handed, self._handed, reply, command_id, self._last)
        task = asyncio.create_task(run)
        self._last, self._handed = task, handed
        running.add(task)
        task.add_done_callback(running.discard)

    async def settle(self) -> None:
        """Wait until every publish started has replied: before any other command, and
        before the connection's handler ends (a client gone leaves its publishes to
        finish, each bounded by the broker's timeouts). If this wait is cancelled (the
        server stopping), the publishes are cancelled too."""
        running = self._running
        if not running:
            return
        try:
            while running:
                await asyncio.wait(set(running))
        except asyncio.CancelledError:
            for task in running:
                task.cancel()
            raise

    async def _run(
        self,
        publish: Publish,
        handed: asyncio.Future[None],
        previous_handed: asyncio.Future[None] | None,
        reply: Reply,
        command_id: Any,
        previous: asyncio.Task[None] | None,
    ) -> None:
        def hand_on() -> None:
            if not handed.done():
                handed.set_result(None)

        outcome: StreamPosition | FeedsError | Exception | None
        try:
            if previous_handed is not None and not previous_handed.done():
                await asyncio.wait({previous_handed})
            outcome = await publish(on_handed=hand_on)
        except Exception as exc:  # FeedsError too: told to the client in order
            outcome = exc
        finally:
            hand_on()  # refused or failed before the broker: the next one goes on
        try:
            # After the replies of the publishes before it, whatever this one's outcome:
            # also a close for an unexpected error must not drop their acks.
            if previous is not None and not previous.done():
                await asyncio.wait({previous})
            if isinstance(outcome, FeedsError):
                self._conn.send_failure(outcome, command_id)
            elif isinstance(outcome, Exception):
                raise outcome
            else:
                reply(outcome)
        except Exception:
            # What the handler does with an error it did not expect (extension.py):
            # nobody awaits this task to see it.
            conn = self._conn
            log.exception("connection %s failed", conn.id, extra={"client": conn.id})
            conn.close(CloseCode.INTERNAL_ERROR, "internal error")
