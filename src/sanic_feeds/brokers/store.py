"""A channel's state in Redis: offsets and epochs, history, idempotency keys, presence.

The command side of every Redis broker, over any client that speaks to the right
node: a plain ``Redis`` (one server, or Sentinel's master) or a ``RedisCluster``,
which routes each command, and each ``EVALSHA``, by the slot of its keys (they all
carry the channel's hash tag, ``keys.py``). Publishing and reading a channel's
position are Lua scripts (``lua/``): a channel gets its epoch from whichever of them
comes first. In a cluster the publish script sends with ``SPUBLISH``, which reaches
the subscribers of the channel's shard only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from importlib.resources import files
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ..codec import check_data
from ..events import Event, Join, Leave, Publication, StreamPosition, now_ms
from .base import BrokerOptions, InstanceStatus
from .batching import CommandBatcher, ScriptBatcher
from .envelope import (
    MalformedPayload,
    decode_envelope,
    decode_status,
    encode_envelope,
    encode_membership,
    encode_status,
)
from .failures import unavailable
from .keys import INSTANCES_KEY, channel_keys, status_key

__all__ = ["RedisStore", "StoreBacked", "publish_script", "unavailable"]

log = logging.getLogger("sanic_feeds.broker")


def publish_script(*, sharded: bool) -> str:
    """The source of ``lua/publish.lua``; ``sharded``: the variant that sends with
    ``SPUBLISH`` (Redis Cluster), otherwise the same script."""
    source = _lua("publish.lua")
    if not sharded:
        return source
    call = "redis.call('PUBLISH', "
    if source.count(call) != 1:
        raise RuntimeError(f"publish.lua must contain exactly one {call!r}")
    return source.replace(call, "redis.call('SPUBLISH', ")


def _lua(name: str) -> str:
    return files(__package__).joinpath("lua", name).read_text()


def _publications(channel: str, epoch: str, entries: list[Any]) -> list[Publication]:
    """The publications of stream entries as a script returns them."""
    return [
        decode_envelope(channel, int(entry_id.split(b"-", 1)[0]), epoch, _field(fields, b"e"))
        for entry_id, fields in entries
    ]


def _field(fields: list[bytes], name: bytes) -> bytes:
    """The value of ``name`` in a stream entry as a script returns it: ``[field, value, ...]``."""
    return dict(zip(fields[::2], fields[1::2], strict=True))[name]


class RedisStore:
    """The broker calls that are commands (everything but delivery), on ``redis``.

    ``sharded``: Redis Cluster, publish with ``SPUBLISH``. ``max_concurrent``: at most
    this many commands in flight outside the script pipelines (``RedisCluster`` raises
    instead of waiting when a node's connections run out); None: the client's pool
    makes callers wait.
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        options: BrokerOptions,
        *,
        sharded: bool = False,
        max_concurrent: int | None = None,
    ) -> None:
        self._redis = redis
        self._options = options
        self._sharded = sharded
        self._slots = None if max_concurrent is None else asyncio.Semaphore(max_concurrent)
        self._publish_script = ScriptBatcher(
            redis, publish_script(sharded=sharded), name="feeds-publish-batch"
        )
        self._position_script = ScriptBatcher(
            redis, _lua("position.lua"), name="feeds-position-batch", writes=False
        )
        # Clients join and leave in bursts (an instance's clients moving after a restart),
        # each writing presence and asking for the epoch that replaced theirs: one
        # pipeline, in the order they were made, not a pooled connection each.
        self._commands = CommandBatcher(redis, name="feeds-command-batch")

    async def load_scripts(self) -> None:
        """Load both scripts now, so that the first calls do not fail over to loading them."""
        await self._publish_script.load()
        await self._position_script.load()

    async def close(self) -> None:
        """Fail the calls still queued; the client is the caller's to close."""
        # Together: each is bounded (closing.py), and neither must be cut short.
        await asyncio.gather(
            self._publish_script.close(),
            self._position_script.close(),
            self._commands.close(),
        )

    @contextlib.asynccontextmanager
    async def _command(self) -> AsyncIterator[None]:
        """One command (or pipeline) in flight: within the limit, failures mapped."""
        with unavailable():
            if self._slots is None:
                yield
            else:
                async with self._slots:
                    yield

    # -- publishing and reading

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        client: str | None = None,
        raw: str | None = None,
        idempotency_key: str | None = None,
    ) -> StreamPosition:
        check_data(data)
        keys = channel_keys(channel)
        envelope = encode_envelope(
            Publication(channel, 0, "", data, client=client, ts_ms=now_ms(), raw=raw)
        )
        options = self._options
        script_keys = [keys.meta, keys.history]
        script_args: list[str | bytes | int] = [
            keys.pubsub,
            envelope,
            options.history_size,
            options.history_ttl_s,
            self._meta_ttl_s,
            options.epoch_start_kept,
            int(options.epoch_start_kept_s * 1000),
        ]
        if idempotency_key is not None:
            script_keys.append(keys.idempotency(idempotency_key))
            script_args.append(options.idempotency_ttl_s)
        offset, epoch = await self._publish_script(script_keys, script_args)
        return StreamPosition(int(offset), epoch.decode())

    async def publish_event(self, event: Event) -> None:
        if not isinstance(event, Join | Leave):
            raise TypeError("publications go through publish()")
        payload = encode_membership(event)
        name = channel_keys(event.channel).pubsub
        async with self._command():
            if self._sharded:
                await self._redis.spublish(name, payload)
            else:
                await self._redis.publish(name, payload)

    @property
    def _meta_ttl_s(self) -> int:
        """How long a channel's offset and epoch outlive its last publish (or their creation)."""
        return max(self._options.meta_ttl_s, self._options.history_ttl_s)

    async def _read(
        self,
        channel: str,
        count: int,
        start_id: str | None,
        expected_epoch: str | None = None,
        *,
        epoch_start: bool = False,
    ) -> tuple[int, str, list[Any]]:
        """Run ``lua/position.lua``: (offset, epoch, up to ``count`` entries of history
        from ``start_id`` on, or the newest first without it; the oldest when the epoch is
        not ``expected_epoch``; with ``epoch_start``, of the epoch's start that history
        no longer holds); creates the epoch of a channel that has none."""
        keys = channel_keys(channel)
        options = self._options
        args: list[str | int] = [self._meta_ttl_s, options.history_size, count]
        if start_id is not None:
            args.append(start_id)
            if expected_epoch is not None:
                args.append(expected_epoch)
                if epoch_start:
                    args.append(int(options.epoch_start_kept_s * 1000))
        offset, epoch, entries = await self._position_script([keys.meta, keys.history], args)
        return int(offset), epoch.decode(), entries

    async def position(self, channel: str) -> StreamPosition:
        offset, epoch, _ = await self._read(channel, 0, None)
        return StreamPosition(offset, epoch)

    async def peek_position(self, channel: str) -> StreamPosition | None:
        # A plain read, unlike lua/position.lua, which gives a channel without one an epoch.
        async with self._command():
            offset, epoch = await self._redis.hmget(channel_keys(channel).meta, "offset", "epoch")
        if epoch is None:
            return None
        epoch_text = epoch.decode() if isinstance(epoch, bytes) else epoch
        return StreamPosition(int(offset or 0), epoch_text)

    async def history(
        self, channel: str, since: int | None, limit: int, *, epoch: str | None = None
    ) -> tuple[list[Publication], StreamPosition]:
        start_id = None if since is None else f"{since + 1}-0"
        offset, current, entries = await self._read(channel, max(limit, 0), start_id, epoch)
        if since is None:
            entries.reverse()
        return _publications(channel, current, entries), StreamPosition(offset, current)

    async def epoch_start(
        self, channel: str, epoch: str, since: int, limit: int
    ) -> list[Publication]:
        _, current, entries = await self._read(
            channel, max(limit, 0), f"{since + 1}-0", epoch, epoch_start=True
        )
        return _publications(channel, current, entries) if current == epoch else []

    # -- epochs that replaced others

    async def supersede(self, channel: str, old_epoch: str, new_epoch: str) -> None:
        key = channel_keys(channel).epochs
        async with self._command(), self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, old_epoch, new_epoch)
            pipe.expire(key, max(1, self._options.history_ttl_s))
            await pipe.execute()

    async def successor(self, channel: str, epoch: str) -> str | None:
        value = await self._commands("HGET", channel_keys(channel).epochs, epoch)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    # -- presence

    async def add_presence(self, channel: str, client: str, info: Any) -> None:
        entry = orjson.dumps([self._options.instance_id, info])
        await self._commands("HSET", channel_keys(channel).presence, client, entry)

    async def remove_presence(self, channel: str, client: str) -> None:
        await self._commands("HDEL", channel_keys(channel).presence, client)

    async def presence(self, channel: str) -> dict[str, Any]:
        key = channel_keys(channel).presence
        now = now_ms()
        alive_since_ms = now - int(self._instance_expiry_s * 1000)
        gone_before_ms = now - int(self._instance_gone_s * 1000)
        async with self._command():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(key)
                pipe.zrangebyscore(INSTANCES_KEY, gone_before_ms, "+inf", withscores=True)
                entries, heard = await pipe.execute()
            last_heard_ms = {instance.decode(): score for instance, score in heard}
            present: dict[str, Any] = {}
            gone: list[bytes] = []
            for client, entry in entries.items():
                instance, info = orjson.loads(entry)
                heard_ms = last_heard_ms.get(instance)
                if heard_ms is None:
                    gone.append(client)
                elif heard_ms >= alive_since_ms:
                    present[client.decode()] = info
                # else: silent for a while (crashed, or stopped, overloaded, cut off
                # from Redis): not listed, but kept, in case it comes back with its
                # clients still connected.
            if gone:
                # Entries of an instance silent for long (it crashed) or closed:
                # nobody else would ever remove them.
                await self._redis.hdel(key, *gone)
        return present

    # -- instances

    async def instances(self) -> list[InstanceStatus]:
        """The statuses of the instances heard within the expiry, sorted by address, id."""
        alive_since_ms = now_ms() - self.instance_expiry_ms
        async with self._command():
            ids = cast(
                list[bytes],
                await self._redis.zrangebyscore(INSTANCES_KEY, alive_since_ms, "+inf"),
            )
            if not ids:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for instance in ids:
                    pipe.get(status_key(instance.decode()))
                payloads = await pipe.execute()
        statuses = []
        for payload in payloads:
            if payload is None:
                continue  # heard, but it tells nothing about itself (no status source)
            try:
                statuses.append(decode_status(payload))
            except MalformedPayload as exc:
                log.warning("ignoring %s", exc)
        return sorted(statuses, key=lambda status: (status.address, status.id))

    @property
    def instance_expiry_ms(self) -> int:
        """Silent this long, an instance is not counted (its clients are not listed, its
        status expires)."""
        return int(self._instance_expiry_s * 1000)

    @property
    def _instance_expiry_s(self) -> float:
        return 5 * self._options.heartbeat_interval_s

    @property
    def _instance_gone_s(self) -> float:
        """Silent this long, an instance is gone for good (its entries are deleted)."""
        return max(60.0, 60 * self._options.heartbeat_interval_s)

    async def say_goodbye(self) -> None:
        """Take this instance off the registry and delete its status (it is closing): its
        presence entries are deleted by the next read of each channel's presence. Raises
        when Redis does not answer; callers bound and ignore that."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(INSTANCES_KEY, self._options.instance_id)
            pipe.delete(status_key(self._options.instance_id))
            await pipe.execute()


class StoreBacked:
    """What every Redis broker does the same way through its ``RedisStore``: the
    commands (publish, reads, presence, the instances) and the status its heartbeat
    carries. The broker sets ``_store`` and ``_status``."""

    _store: RedisStore
    #: What each heartbeat tells the other instances about this one.
    _status: Callable[[], InstanceStatus] | None

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        client: str | None = None,
        raw: str | None = None,
        idempotency_key: str | None = None,
    ) -> StreamPosition:
        return await self._store.publish(
            channel, data, client=client, raw=raw, idempotency_key=idempotency_key
        )

    async def publish_event(self, event: Event) -> None:
        await self._store.publish_event(event)

    async def position(self, channel: str) -> StreamPosition:
        return await self._store.position(channel)

    async def peek_position(self, channel: str) -> StreamPosition | None:
        return await self._store.peek_position(channel)

    async def history(
        self, channel: str, since: int | None, limit: int, *, epoch: str | None = None
    ) -> tuple[list[Publication], StreamPosition]:
        return await self._store.history(channel, since, limit, epoch=epoch)

    async def supersede(self, channel: str, old_epoch: str, new_epoch: str) -> None:
        await self._store.supersede(channel, old_epoch, new_epoch)

    async def successor(self, channel: str, epoch: str) -> str | None:
        return await self._store.successor(channel, epoch)

    async def epoch_start(
        self, channel: str, epoch: str, since: int, limit: int
    ) -> list[Publication]:
        return await self._store.epoch_start(channel, epoch, since, limit)

    async def add_presence(self, channel: str, client: str, info: Any) -> None:
        await self._store.add_presence(channel, client, info)

    async def remove_presence(self, channel: str, client: str) -> None:
        await self._store.remove_presence(channel, client)

    async def presence(self, channel: str) -> dict[str, Any]:
        return await self._store.presence(channel)

    def set_status(self, source: Callable[[], InstanceStatus]) -> None:
        self._status = source

    async def instances(self) -> list[InstanceStatus]:
        return await self._store.instances()

    def _status_payload(self) -> bytes | None:
        source = self._status
        if source is None:
            return None
        try:
            return encode_status(source())
        except Exception:
            # The heartbeat must go on: it is what keeps this instance ready and present.
            log.exception("cannot read this instance's status")
            return None
