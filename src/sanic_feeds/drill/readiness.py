"""Watching ``GET /ready`` of every instance during a drill, and its transitions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .http import HttpClient, HttpError

__all__ = ["ReadinessWatch", "Transition"]

#: Seconds between two polls of an instance, and the most one poll may take.
_POLL_S = 0.1
_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class Transition:
    """Instance ``instance`` became ready (or not) at ``at`` (monotonic)."""

    at: float
    instance: int
    ready: bool


class ReadinessWatch:
    """Polls every instance's ``/ready`` until :meth:`stop`; an instance that does not
    answer (killed, stopped) is not ready. :attr:`transitions` lists the changes after
    the first answer of each."""

    def __init__(self, bases: Sequence[str]) -> None:
        self._bases = list(bases)
        self.transitions: list[Transition] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch(index, base), name=f"drill-ready-{index}")
            for index, base in enumerate(self._bases)
        ]

    async def _watch(self, index: int, base: str) -> None:
        client = HttpClient(base, _TIMEOUT_S)
        state: bool | None = None
        try:
            while True:
                began = time.monotonic()
                try:
                    ready = (await client.request("GET", "/ready")).status == 200
                except HttpError:
                    ready = False
                if state is not None and ready != state:
                    self.transitions.append(Transition(time.monotonic(), index, ready))
                state = ready
                await asyncio.sleep(max(0.0, _POLL_S - (time.monotonic() - began)))
        finally:
            client.close()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
