"""The Redis broker: pub/sub for delivery, a stream per channel for history.

One pub/sub connection and one reader task per process, dispatching on the
message's channel; commands (publish, history, presence) go through a
connection pool. Publishing and reading a channel's position are Lua scripts
(``lua/``): a channel gets its epoch from whichever of them comes first. The
reader notices a lost connection (or a deaf one, by its own heartbeat not
coming back), reconnects with backoff, resubscribes every channel, and tells
the handler so that gaps get healed from history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from importlib.resources import files
from typing import Any, cast

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError

from ..backoff import Backoff
from ..codec import check_data
from ..errors import BrokerUnavailable
from ..events import Event, Join, Leave, Publication, StreamPosition, now_ms
from .base import BrokerHandler, BrokerOptions, InstanceStatus
from .envelope import (
    MalformedPayload,
    decode_envelope,
    decode_payload,
    decode_status,
    encode_envelope,
    encode_membership,
    encode_status,
)
from .script_batch import ScriptBatcher

__all__ = ["RedisBroker", "channel_keys"]

log = logging.getLogger("sanic_feeds.broker")

PREFIX = "feeds"
_INSTANCES_KEY = f"{PREFIX}:instances"
_STATUS_PREFIX = f"{PREFIX}:status:"
_PUBSUB_PREFIX = f"{PREFIX}:{{"
_CONNECT_TIMEOUT_S = 2.0
_COMMAND_TIMEOUT_S = 5.0
#: Command connections per process; more concurrent commands wait for one.
_POOL_CONNECTIONS = 100
_SUBSCRIBE_TIMEOUT_S = 5.0
#: The longest wait between two reconnects of the pub/sub reader (full jitter below it).
_RECONNECT_MAX_S = 0.5
#: How long close() waits for Redis to take the instance off the instances set.
_GOODBYE_TIMEOUT_S = 0.5


class ChannelKeys:
    """Redis names of one channel. The ``{channel}`` hash tag keeps all of a
    channel's keys in one Redis Cluster slot, so the publish script works there."""

    __slots__ = ("history", "meta", "presence", "pubsub")

    def __init__(self, channel: str) -> None:
        tag = f"{PREFIX}:{{{channel}}}"
        self.pubsub = tag
        self.meta = f"{tag}:meta"
        self.history = f"{tag}:history"
        self.presence = f"{tag}:presence"

    def idempotency(self, key: str) -> str:
        return f"{self.pubsub}:idem:{key}"


def channel_keys(channel: str) -> ChannelKeys:
    return ChannelKeys(channel)


def _channel_of(pubsub_name: bytes) -> str:
    return pubsub_name[len(_PUBSUB_PREFIX) : -1].decode()


def _field(fields: list[bytes], name: bytes) -> bytes:
    """The value of ``name`` in a stream entry as a script returns it: ``[field, value, ...]``."""
    return dict(zip(fields[::2], fields[1::2], strict=True))[name]


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """Map every way Redis can fail to the one error clients are told about."""
    try:
        yield
    except (TimeoutError, RedisError, OSError) as exc:
        raise BrokerUnavailable(f"broker unavailable: {exc}") from exc


class RedisBroker:
    def __init__(self, url: str, options: BrokerOptions | None = None) -> None:
        self._url = url
        self._options = options or BrokerOptions()
        self._heartbeat_channel = f"{PREFIX}:instance:{self._options.instance_id}".encode()
        self._status_key = _STATUS_PREFIX + self._options.instance_id
        #: What each heartbeat tells the other instances about this one.
        self._status: Callable[[], InstanceStatus] | None = None
        # Commands: a few quick retries ride over pooled connections that a
        # Redis restart left stale; a refused connection fails fast anyway.
        # A blocking pool: a burst of concurrent commands (many clients
        # publishing at once) waits its turn for a connection instead of
        # failing with "Too many connections" once the pool is exhausted.
        self._redis: Redis = Redis.from_pool(
            BlockingConnectionPool.from_url(
                url,
                max_connections=_POOL_CONNECTIONS,
                timeout=_COMMAND_TIMEOUT_S,
                socket_connect_timeout=_CONNECT_TIMEOUT_S,
                socket_timeout=_COMMAND_TIMEOUT_S,
                retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 3),
            )
        )
        # Pub/sub: no retries inside redis-py, because a silent reconnect
        # would hide the messages lost meanwhile; the reader reconnects.
        self._pubsub_client: Redis = Redis.from_url(
            url,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        lua = files(__package__).joinpath("lua")
        self._publish_script = ScriptBatcher(
            self._redis, lua.joinpath("publish.lua").read_text(), name="feeds-publish-batch"
        )
        self._position_script = ScriptBatcher(
            self._redis, lua.joinpath("position.lua").read_text(), name="feeds-position-batch"
        )
        self._handler: BrokerHandler | None = None
        #: Channels this process wants delivered (the hub reference-counts).
        self._channels: set[str] = set()
        #: Live pub/sub connection, None while disconnected.
        self._pubsub: PubSub | None = None
        #: Subscribe calls waiting for Redis to confirm, by pub/sub name.
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        #: Names still unconfirmed after a reconnect; when empty, gaps can be healed.
        self._resubscribing: set[bytes] = set()
        self._last_heartbeat_s = 0.0
        self._connected_at_s = 0.0
        self._reader_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False

    # -- lifecycle

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        with _unavailable():
            await asyncio.wait_for(self._redis.ping(), _CONNECT_TIMEOUT_S * 2)
            await self._publish_script.load()
            await self._position_script.load()
        self._reader_task = asyncio.create_task(self._read_forever(), name="feeds-redis-reader")
        self._heartbeat_task = asyncio.create_task(
            self._heartbeat_forever(), name="feeds-redis-heartbeat"
        )
        try:
            await asyncio.wait_for(self._connected.wait(), _SUBSCRIBE_TIMEOUT_S)
        except TimeoutError:
            await self.close()
            raise BrokerUnavailable("broker unavailable: pub/sub did not connect") from None

    async def close(self) -> None:
        self._closing = True
        for task in (self._heartbeat_task, self._reader_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._heartbeat_task = self._reader_task = None
        await self._publish_script.close()
        await self._position_script.close()
        # Closed: no longer hearing anything (``ready`` turns false).
        self._pubsub = None
        self._connected.clear()
        # A goodbye, not a necessity (presence and the instance's status expire
        # a silent instance anyway): a Redis that does not answer must not hold
        # the shutdown.
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self._say_goodbye(), _GOODBYE_TIMEOUT_S)
        await self._redis.aclose()
        await self._pubsub_client.aclose()

    async def _say_goodbye(self) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(_INSTANCES_KEY, self._options.instance_id)
            pipe.delete(self._status_key)
            await pipe.execute()

    @property
    def ready(self) -> bool:
        fresh_s = 3 * self._options.heartbeat_interval_s
        return (
            self._pubsub is not None
            and not self._resubscribing
            and time.monotonic() - self._last_heartbeat_s < fresh_s
        )

    # -- subscriptions

    async def subscribe(self, channel: str) -> None:
        name = channel_keys(channel).pubsub.encode()
        pubsub = self._pubsub
        if pubsub is None:
            raise BrokerUnavailable("broker unavailable: reconnecting")
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[name] = confirmed
        self._channels.add(channel)
        try:
            with _unavailable():
                await pubsub.subscribe(name)
                await asyncio.wait_for(asyncio.shield(confirmed), _SUBSCRIBE_TIMEOUT_S)
        except BaseException:
            self._channels.discard(channel)
            raise
        finally:
            if self._confirmations.get(name) is confirmed:
                del self._confirmations[name]

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        pubsub = self._pubsub
        if pubsub is not None:
            # A failure here means the connection is gone, and with it the subscription.
            with contextlib.suppress(RedisError, OSError):
                await pubsub.unsubscribe(channel_keys(channel).pubsub)

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
        with _unavailable():
            await self._redis.publish(channel_keys(event.channel).pubsub, payload)

    @property
    def _meta_ttl_s(self) -> int:
        """How long a channel's offset and epoch outlive its last publish (or their creation)."""
        return max(self._options.meta_ttl_s, self._options.history_ttl_s)

    async def _read(
        self, channel: str, count: int, start_id: str | None
    ) -> tuple[int, str, list[Any]]:
        """Run ``lua/position.lua``: (offset, epoch, up to ``count`` stream entries from
        ``start_id`` on, or the newest first without it); creates the epoch of a channel
        that has none."""
        keys = channel_keys(channel)
        args: list[str | int] = [self._meta_ttl_s, count]
        if start_id is not None:
            args.append(start_id)
        offset, epoch, entries = await self._position_script([keys.meta, keys.history], args)
        return int(offset), epoch.decode(), entries

    async def position(self, channel: str) -> StreamPosition:
        offset, epoch, _ = await self._read(channel, 0, None)
        return StreamPosition(offset, epoch)

    async def peek_position(self, channel: str) -> StreamPosition | None:
        # A plain read, unlike lua/position.lua, which gives a channel without one an epoch.
        with _unavailable():
            offset, epoch = await self._redis.hmget(channel_keys(channel).meta, "offset", "epoch")
        if epoch is None:
            return None
        epoch_text = epoch.decode() if isinstance(epoch, bytes) else epoch
        return StreamPosition(int(offset or 0), epoch_text)

    async def history(
        self, channel: str, since: int | None, limit: int
    ) -> tuple[list[Publication], StreamPosition]:
        start_id = None if since is None else f"{since + 1}-0"
        offset, epoch, entries = await self._read(channel, max(limit, 0), start_id)
        if since is None:
            entries.reverse()
        pubs = [
            decode_envelope(channel, int(entry_id.split(b"-", 1)[0]), epoch, _field(fields, b"e"))
            for entry_id, fields in entries
        ]
        return pubs, StreamPosition(offset, epoch)

    # -- presence

    async def add_presence(self, channel: str, client: str, info: Any) -> None:
        entry = orjson.dumps([self._options.instance_id, info])
        with _unavailable():
            await self._redis.hset(channel_keys(channel).presence, client, entry)

    async def remove_presence(self, channel: str, client: str) -> None:
        with _unavailable():
            await self._redis.hdel(channel_keys(channel).presence, client)

    async def presence(self, channel: str) -> dict[str, Any]:
        key = channel_keys(channel).presence
        now = now_ms()
        alive_since_ms = now - int(self._instance_expiry_s * 1000)
        gone_before_ms = now - int(self._instance_gone_s * 1000)
        with _unavailable():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(key)
                pipe.zrangebyscore(_INSTANCES_KEY, gone_before_ms, "+inf", withscores=True)
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

    def set_status(self, source: Callable[[], InstanceStatus]) -> None:
        self._status = source

    async def instances(self) -> list[InstanceStatus]:
        alive_since_ms = now_ms() - int(self._instance_expiry_s * 1000)
        with _unavailable():
            ids = cast(
                list[bytes],
                await self._redis.zrangebyscore(_INSTANCES_KEY, alive_since_ms, "+inf"),
            )
            if not ids:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for instance in ids:
                    pipe.get(_STATUS_PREFIX + instance.decode())
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
    def _instance_expiry_s(self) -> float:
        """Silent this long, an instance is not counted (its clients are not listed)."""
        return 5 * self._options.heartbeat_interval_s

    @property
    def _instance_gone_s(self) -> float:
        """Silent this long, an instance is gone for good (its entries are deleted)."""
        return max(60.0, 60 * self._options.heartbeat_interval_s)

    # -- the reader

    async def _read_forever(self) -> None:
        # Back within half a second of Redis at worst: every message published while
        # the reader is away is a gap to heal from history, and after a restart the
        # publishers' retried backlog lands at once; a slow return can push the gap
        # past --history-size (the drills saw 1 to 2.8 s with a 2 s ceiling).
        backoff = Backoff(min_s=0.05, max_s=_RECONNECT_MAX_S)
        first = True
        while True:
            pubsub = self._pubsub_client.pubsub()
            session = asyncio.create_task(self._read_session(pubsub, resubscribe=not first))
            self._session_task = session
            try:
                await asyncio.wait({session})
            except asyncio.CancelledError:
                # close(): the session and its connection go with the reader.
                session.cancel()
                with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                    await session
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            # The session ended: stop accepting subscriptions, fail those in
            # flight, and drop the connection before trying again.
            self._pubsub = None
            self._connected.clear()
            self._resubscribing.clear()
            for confirmed in self._confirmations.values():
                if not confirmed.done():
                    confirmed.set_exception(BrokerUnavailable("broker unavailable: disconnected"))
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            error = None if session.cancelled() else session.exception()
            if self._closing:
                return
            if session.cancelled():
                log.warning("broker pub/sub went deaf (own heartbeat missing); reconnecting")
            else:
                log.warning("broker pub/sub connection lost (%s); reconnecting", error)
            if self._connected_at_s and time.monotonic() - self._connected_at_s > backoff.max_s:
                backoff.reset()  # it was a working connection: retry quickly
            self._connected_at_s = 0.0
            first = False
            # Jittered, so that many instances do not reconnect in lockstep
            # after a Redis restart.
            await asyncio.sleep(backoff.next_delay_s())

    async def _read_session(self, pubsub: PubSub, *, resubscribe: bool) -> None:
        names = [
            self._heartbeat_channel,
            *(channel_keys(c).pubsub.encode() for c in self._channels),
        ]
        if resubscribe:
            self._resubscribing = set(names)
        await pubsub.subscribe(*names)
        self._pubsub = pubsub
        self._connected_at_s = time.monotonic()
        self._connected.set()
        if resubscribe:
            log.info("broker pub/sub reconnected; %d channels resubscribed", len(names) - 1)
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        name: bytes = message["channel"]
        if kind == "message":
            if name == self._heartbeat_channel:
                self._last_heartbeat_s = time.monotonic()
                return
            try:
                event = decode_payload(_channel_of(name), message["data"])
            except MalformedPayload as exc:
                log.warning("ignoring %s", exc)
                return
            if self._handler is not None:
                self._handler.on_event(event)
        elif kind == "subscribe":
            confirmed = self._confirmations.get(name)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            if self._resubscribing:
                self._resubscribing.discard(name)
                if not self._resubscribing and self._handler is not None:
                    self._handler.on_resubscribed()

    # -- heartbeat

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

    async def _heartbeat_forever(self) -> None:
        interval_s = self._options.heartbeat_interval_s
        deaf_after_s = 5 * interval_s
        while True:
            status = self._status_payload()
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.publish(self._heartbeat_channel, b"")
                    pipe.zadd(_INSTANCES_KEY, {self._options.instance_id: now_ms()})
                    if status is not None:
                        # Expires with the heartbeat: a crashed instance's status goes too.
                        pipe.set(self._status_key, status, px=int(self._instance_expiry_s * 1000))
                    await pipe.execute()
            session = self._session_task
            connected_for_long = (
                self._pubsub is not None
                and time.monotonic() - max(self._last_heartbeat_s, self._connected_at_s)
                > deaf_after_s
            )
            if connected_for_long and session is not None and not session.done():
                # Connected but deaf (a half-open TCP connection, or Redis
                # stopped sending): only a new connection can tell.
                session.cancel()
            await asyncio.sleep(interval_s)
