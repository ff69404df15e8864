"""Runs the Redis calls made during one loop iteration in one round trip.

Many clients publishing (or subscribing, or leaving) at once each make a call; one at a
time, every call pays redis-py's per-command machinery, its own round trip and, in a
burst, a pooled connection of its own (one made for it after a Redis restart). Here
calls queue, and one pipeline carries everything queued since the previous pipeline
left, so under load the batches grow by themselves and with a single caller nothing
waits. One pipeline is in flight at a time, which keeps the calls in the order they
were made.
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
from .failures import REDIS_FAILURES, describe

__all__ = ["CommandBatcher", "ScriptBatcher"]

#: Error replies that say where Redis is (a failover, a slot on the move), not what the
#: call did wrong.
_NOT_THE_SCRIPT = (ClusterError, AskError, TryAgainError, ReadOnlyError)

log = logging.getLogger("sanic_feeds.broker")

_Call = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


class _PipelineBatcher:
    def __init__(self, redis: Redis | RedisCluster, *, name: str) -> None:
        self._redis = redis
        #: The sender task's name.
        self._name = name
        self._queued: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    async def _call(self, *command: Any) -> Any:
        """The command's reply; ``BrokerUnavailable`` when Redis cannot be reached."""
        if self._closed:
            raise BrokerUnavailable("broker unavailable: closed")
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((command, reply))
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
        for _, reply in queued:
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
                    for _, reply in batch:
                        if not reply.done():
                            reply.set_exception(failure)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
        finally:
            if self._sender is asyncio.current_task():
                self._sender = None

    async def _run(self, batch: list[_Call]) -> None:
        _answer(list(zip(batch, await self._pipeline(batch), strict=True)))

    async def _pipeline(self, calls: list[_Call]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for command, _ in calls:
                # A cluster routes each command by the slot of its keys.
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


class CommandBatcher(_PipelineBatcher):
    """Plain commands (writes whose replies nobody waits on together, such as presence)."""

    async def __call__(self, *command: Any) -> Any:
        """``command``'s reply; ``BrokerUnavailable`` when Redis cannot be reached."""
        return await self._call(*command)


class ScriptBatcher(_PipelineBatcher):
    """Calls of one Lua script, by its SHA, loading it again when Redis forgot it.

    ``writes``: the script writes, so calls on the same keys must take effect in the
    order they were made. A call Redis did not know the script for is then run again
    only if no later call on its keys ran in the same pipeline (another client can load
    the script between two of its commands); otherwise it fails with
    ``BrokerUnavailable``, because running it now would put it after that call.
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        source: str,
        *,
        name: str = "feeds-script-batch",
        writes: bool = True,
    ) -> None:
        super().__init__(redis, name=name)
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        self._writes = writes

    async def load(self) -> None:
        """Load the script now, so that the first calls do not fail over to loading it."""
        await self._redis.script_load(self._source)

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's reply; ``BrokerUnavailable`` when Redis cannot be reached."""
        # Not pipe.evalsha(), which a RedisCluster pipeline refuses (a node may not have
        # the script); NOSCRIPT is handled here.
        return await self._call("EVALSHA", self._sha, len(keys), *keys, *args)

    async def _run(self, batch: list[_Call]) -> None:
        replies = await self._pipeline(batch)
        # What ran is answered now, whatever happens to the rest.
        _answer([(c, r) for c, r in zip(batch, replies, strict=True) if not _no_script(r)])
        if not any(map(_no_script, replies)):
            return
        # Redis restarted or flushed its scripts: nothing of those calls ran.
        unknown = _to_run_again(_not_run(batch, replies), in_order=self._writes)
        if unknown:
            await self._redis.script_load(self._source)
            _answer(list(zip(unknown, await self._pipeline(unknown), strict=True)))


def _answer(calls_and_replies: list[tuple[_Call, Any]]) -> None:
    for (_, future), reply in calls_and_replies:
        if future.done():
            continue
        if isinstance(reply, Exception):
            future.set_exception(_as_unavailable(reply))
        else:
            future.set_result(reply)


def _no_script(reply: Any) -> bool:
    return isinstance(reply, NoScriptError)


def _not_run(batch: list[_Call], replies: list[Any]) -> list[tuple[_Call, bool]]:
    """The calls Redis did not know the script for, in order, each with whether a later
    call on any of its keys ran."""
    ran_later: set[Any] = set()
    not_run: list[tuple[_Call, bool]] = []
    for call, reply in zip(reversed(batch), reversed(replies), strict=True):
        keys = _keys(call)
        if _no_script(reply):
            not_run.append((call, not ran_later.isdisjoint(keys)))
        else:
            ran_later.update(keys)
    not_run.reverse()
    return not_run


def _to_run_again(not_run: list[tuple[_Call, bool]], *, in_order: bool) -> list[_Call]:
    """The calls to run again; ``in_order``, those a later call on their keys overtook
    fail instead."""
    again = []
    for call, overtaken in not_run:
        if not (in_order and overtaken):
            again.append(call)
        elif not call[1].done():
            call[1].set_exception(
                BrokerUnavailable("broker unavailable: its scripts were reloaded mid-call")
            )
    return again


def _keys(call: _Call) -> tuple[Any, ...]:
    command = call[0]  # EVALSHA sha numkeys key... arg...
    return tuple(command[3 : 3 + int(command[2])])


def _as_unavailable(exc: BaseException) -> BaseException:
    """Redis failing is ``BrokerUnavailable``; anything else (a bug) stays what it is."""
    if isinstance(exc, ResponseError) and not isinstance(exc, _NOT_THE_SCRIPT):
        # The call itself failed (an argument a script cannot take): a bug to fix, not
        # an outage. Clients are told only that the broker is unavailable.
        log.error("a Redis call failed: %s", exc)
    if isinstance(exc, REDIS_FAILURES):
        return BrokerUnavailable(f"broker unavailable: {describe(exc)}")
    if isinstance(exc, asyncio.CancelledError):
        return BrokerUnavailable("broker unavailable: closing")
    return exc
