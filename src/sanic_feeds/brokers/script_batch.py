"""Runs the calls of one Lua script made during one loop iteration in one round trip.

Many clients publishing (or subscribing) at once each call a script; one at a time,
every call pays redis-py's per-command machinery and its own round trip. Here
calls queue, and one pipeline of EVALSHA carries everything queued since the
previous pipeline left, so under load the batches grow by themselves and
with a single caller nothing waits. One pipeline is in flight at a time,
which keeps the calls in the order they were made.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from ..errors import BrokerUnavailable
from .closing import cancel_within
from .failures import REDIS_FAILURES

__all__ = ["ScriptBatcher"]

#: Error replies that say where Redis is (a failover, a slot on the move), not what the
#: script did wrong.
_NOT_THE_SCRIPT = (ClusterError, AskError, TryAgainError, ReadOnlyError)

log = logging.getLogger("sanic_feeds.broker")

_Call = tuple[Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    def __init__(
        self, redis: Redis | RedisCluster, source: str, *, name: str = "feeds-script-batch"
    ) -> None:
        self._redis = redis
        self._source = source
        #: The sender task's name.
        self._name = name
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        self._queued: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    async def load(self) -> None:
        """Load the script now, so that the first calls do not fail over to loading it."""
        await self._redis.script_load(self._source)

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's reply; ``BrokerUnavailable`` when Redis cannot be reached."""
        if self._closed:
            raise BrokerUnavailable("broker unavailable: closed")
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((keys, args, reply))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_batches(), name=self._name)
        return await reply

    async def close(self) -> None:
        """Fail what is queued, and stop the sender (within ``closing.STEP_TIMEOUT_S``:
        a pipeline cancelled mid-flight hands its connection back to redis-py's pool,
        an await of its own)."""
        self._closed = True
        sender, self._sender = self._sender, None
        queued, self._queued = self._queued, []
        for _, _, reply in queued:
            if not reply.done():
                reply.set_exception(BrokerUnavailable("broker unavailable: closing"))
        await cancel_within((sender,), f"the {self._name} sender")

    async def _send_batches(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    await self._run(batch)
                except BaseException as exc:
                    failure = _as_unavailable(exc)
                    for _, _, reply in batch:
                        if not reply.done():
                            reply.set_exception(failure)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
        finally:
            if self._sender is asyncio.current_task():
                self._sender = None

    async def _run(self, batch: list[_Call]) -> None:
        replies = await self._pipeline(batch)
        unknown = [call for call, reply in zip(batch, replies, strict=True) if _no_script(reply)]
        # What ran is answered now, whatever happens to the rest.
        _answer([(c, r) for c, r in zip(batch, replies, strict=True) if not _no_script(r)])
        if unknown:
            # Redis restarted or flushed its scripts: nothing of those calls ran.
            await self._redis.script_load(self._source)
            _answer(list(zip(unknown, await self._pipeline(unknown), strict=True)))

    async def _pipeline(self, calls: list[_Call]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args, _ in calls:
                # Not pipe.evalsha(), which a RedisCluster pipeline refuses (a node
                # may not have the script); NOSCRIPT is handled here. A cluster
                # routes the command by the slot of its keys.
                pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _answer(calls_and_replies: list[tuple[_Call, Any]]) -> None:
    for (_, _, future), reply in calls_and_replies:
        if future.done():
            continue
        if isinstance(reply, Exception):
            future.set_exception(_as_unavailable(reply))
        else:
            future.set_result(reply)


def _no_script(reply: Any) -> bool:
    return isinstance(reply, NoScriptError)


def _as_unavailable(exc: BaseException) -> BaseException:
    """Redis failing is ``BrokerUnavailable``; anything else (a bug) stays what it is."""
    if isinstance(exc, ResponseError) and not isinstance(exc, _NOT_THE_SCRIPT):
        # The script itself failed (an argument it cannot take): a bug to fix, not an
        # outage. Clients are told only that the broker is unavailable.
        log.error("a Redis script failed: %s", exc)
    if isinstance(exc, REDIS_FAILURES):
        return BrokerUnavailable(f"broker unavailable: {exc}")
    if isinstance(exc, asyncio.CancelledError):
        return BrokerUnavailable("broker unavailable: closing")
    return exc
