"""``Expiry``: one timer for every connection's token deadline in the process.

Like the keepalive (``websocket.Keepalive``), it costs nothing per idle connection: a heap
of deadlines and a single timer handle set for the earliest. A connection whose deadline
moves (``refresh``) or that closes leaves a stale heap entry behind, skipped when it comes
up and dropped when stale entries outnumber live ones.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Expiry"]

log = logging.getLogger("sanic_feeds.expiry")

T = TypeVar("T")


class Expiry(Generic[T]):
    """Calls ``on_due(item)`` once the deadline set for ``item`` (Unix seconds) passes.

    ``clock`` is the wall clock deadlines are read against (a token's ``exp`` is wall
    time); the loop's own clock only schedules the next check.
    """

    __slots__ = ("_clock", "_due", "_handle", "_heap", "_loop", "_next_s", "_on_due", "_seq")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_due: Callable[[T], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._loop = loop
        self._on_due = on_due
        self._clock = clock
        #: The live deadline of each item.
        self._due: dict[T, float] = {}
        #: (deadline, sequence, item), stale entries included.
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        #: The deadline the timer is set for.
        self._next_s = float("inf")

    def __len__(self) -> int:
        return len(self._due)

    def set(self, item: T, at_s: float | None) -> None:
        """Set (or move) ``item``'s deadline; None forgets it."""
        if at_s is None:
            self.discard(item)
            return
        self._due[item] = at_s
        heapq.heappush(self._heap, (at_s, next(self._seq), item))
        if at_s < self._next_s:
            self._schedule(at_s)

    def discard(self, item: T) -> None:
        if self._due.pop(item, None) is not None and len(self._heap) > 2 * len(self._due) + 64:
            # Mostly stale: rebuild from the live deadlines.
            self._heap = [(at, next(self._seq), it) for it, at in self._due.items()]
            heapq.heapify(self._heap)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._next_s = float("inf")

    def _schedule(self, at_s: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._next_s = at_s
        self._handle = self._loop.call_later(max(0.0, at_s - self._clock()), self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._next_s = float("inf")
        now_s = self._clock()
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= now_s:
            at_s, _, item = heapq.heappop(heap)
            if due.get(item) != at_s:
                continue  # moved or forgotten since
            del due[item]
            try:
                self._on_due(item)
            except Exception:
                # One failing item must not stop the others' deadlines.
                log.exception("closing an expired connection failed")
        # Stale entries at the top would set the timer early for nothing.
        while heap and due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        if heap:
            self._schedule(heap[0][0])
