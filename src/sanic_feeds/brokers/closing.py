"""Closing a broker within a bound, whatever Redis or redis-py does meanwhile.

A broker's ``close()`` cancels its background tasks and closes its clients. Each of those
steps awaits redis-py, which can wait on a socket of a Redis that stopped answering, or
on its pool's bookkeeping after a cancelled pipeline: an unbounded await there holds a
shutdown (or a test's teardown) forever. Here every step gets a bound; a step past it is
cancelled once more and left behind with a warning, and the close goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from .failures import REDIS_FAILURES

__all__ = ["STEP_TIMEOUT_S", "cancel_within", "finish_within"]

log = logging.getLogger("sanic_feeds.broker")

#: The longest a broker waits for one step of its close (a task to stop, a client to close).
STEP_TIMEOUT_S = 1.0


async def cancel_within(
    tasks: Iterable[asyncio.Task[Any] | None], what: str, timeout_s: float = STEP_TIMEOUT_S
) -> None:
    """Cancel ``tasks`` and wait for them to end, ``timeout_s`` at most."""
    running = {task for task in tasks if task is not None and not task.done()}
    current = asyncio.current_task()
    running.discard(current)
    for task in running:
        task.cancel()
    if not running:
        return
    done, pending = await asyncio.wait(running, timeout=timeout_s)
    for task in done:
        _retrieve(task, what)
    if pending:
        log.warning("%s did not stop within %.1f s of being cancelled; going on", what, timeout_s)


async def finish_within(step: Awaitable[Any], what: str, timeout_s: float = STEP_TIMEOUT_S) -> None:
    """Await ``step`` for ``timeout_s`` at most; a Redis failure in it is only logged.

    Past the bound the step is cancelled and not waited for (``asyncio.wait_for`` would
    wait for the cancellation to finish, which is the very await that may not return).
    """
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        log.warning("%s did not finish within %.1f s; going on", what, timeout_s)
        return
    _retrieve(task, what)


def _retrieve(task: asyncio.Future[Any], what: str) -> None:
    """Collect how a finished step ended: a Redis failure is expected while closing;
    anything else is a bug, logged with its traceback, and the close goes on (raising
    would leave the remaining steps, and their connections, undone)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is None or isinstance(exc, asyncio.CancelledError):
        return
    if isinstance(exc, REDIS_FAILURES):
        log.debug("%s failed while closing: %s", what, exc)
        return
    log.error("%s failed while closing", what, exc_info=exc)
