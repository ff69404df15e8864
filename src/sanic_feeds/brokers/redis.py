"""The Redis broker: pub/sub for delivery, a stream per channel for history.

One pub/sub connection and one reader task per process, dispatching on the
message's channel; commands (publish, history, presence) go through a
connection pool (``store.py``, shared with the Sentinel and Cluster brokers). The
reader notices a lost connection (or a deaf one: nothing arrives on it, its own
heartbeat included), reconnects with backoff, resubscribes every channel, and tells
the handler so that gaps get healed from history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import RedisError

from ..backoff import PromptBackoff
from ..errors import BrokerUnavailable
from ..events import StreamPosition, now_ms
from .base import BrokerHandler, BrokerOptions, InstanceStatus
from .closing import cancel_within, finish_within
from .envelope import MalformedPayload, decode_payload
from .failures import unavailable
from .keys import INSTANCES_KEY, channel_keys, channel_of, heartbeat_channel, status_key
from .store import RedisStore, StoreBacked

__all__ = ["RedisBroker", "channel_keys"]

log = logging.getLogger("sanic_feeds.broker")

_CONNECT_TIMEOUT_S = 2.0
#: What each connection tells Redis about its client (CLIENT SETINFO), made once: a pool
#: given none makes it for every connection it opens, and looking redis-py's version up
#: costs half a millisecond, a hundred times over in a burst after a restart.
DRIVER_INFO = DriverInfo()
_COMMAND_TIMEOUT_S = 5.0
#: Command connections per process; more concurrent commands wait for one.
_POOL_CONNECTIONS = 100
_SUBSCRIBE_TIMEOUT_S = 5.0
#: The pub/sub reader's reconnects: every 0.1 s at most (full jitter below it) for
#: the first seconds of an outage, then backing off to one every 0.5 s at most.
_RECONNECT_PROMPT_S = 0.1
_RECONNECT_PROMPT_FOR_S = 5.0
_RECONNECT_MAX_S = 0.5
#: How long close() waits for Redis to take the instance off the instances set.
_GOODBYE_TIMEOUT_S = 0.5


class RedisBroker(StoreBacked):
    def __init__(self, url: str, options: BrokerOptions | None = None) -> None:
        self._url = url
        self._options = options or BrokerOptions()
        self._heartbeat_channel = heartbeat_channel(self._options.instance_id)
        self._status_key = status_key(self._options.instance_id)
        #: What each heartbeat tells the other instances about this one.
        self._status: Callable[[], InstanceStatus] | None = None
        self._redis, self._pubsub_client = self._clients(url)
        self._store = RedisStore(self._redis, self._options)
        self._handler: BrokerHandler | None = None
        #: Channels this process wants delivered (the hub reference-counts).
        self._channels: set[str] = set()
        #: Live pub/sub connection, None while disconnected.
        self._pubsub: PubSub | None = None
        #: Subscribe calls waiting for Redis to confirm, by pub/sub name.
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        #: Names still unconfirmed after a reconnect; when empty, gaps can be healed.
        self._resubscribing: set[bytes] = set()
        #: The reader found Redis unreachable and is not subscribed again yet:
        #: publishes on the channels in ``_channels`` are refused meanwhile.
        self._unheard = False
        self._last_heartbeat_s = 0.0
        #: When anything last arrived on the pub/sub connection: a connection still
        #: delivering a backlog (the heartbeat behind it) is slow, not deaf.
        self._last_received_s = 0.0
        self._connected_at_s = 0.0
        self._reader_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False

    def _clients(self, url: str) -> tuple[Redis, Redis]:
        """The client for commands and the one pub/sub connections come from."""
        # Commands: a few quick retries ride over pooled connections that a
        # Redis restart left stale; a refused connection fails fast anyway.
        # A blocking pool: a burst of concurrent commands (many clients
        # publishing at once) waits its turn for a connection instead of
        # failing with "Too many connections" once the pool is exhausted.
        commands: Redis = Redis.from_pool(
            BlockingConnectionPool.from_url(
                url,
                max_connections=_POOL_CONNECTIONS,
                timeout=_COMMAND_TIMEOUT_S,
                socket_connect_timeout=_CONNECT_TIMEOUT_S,
                socket_timeout=_COMMAND_TIMEOUT_S,
                retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 3),
                driver_info=DRIVER_INFO,
            )
        )
        # Pub/sub: no retries inside redis-py, because a silent reconnect
        # would hide the messages lost meanwhile; the reader reconnects.
        pubsub: Redis = Redis.from_url(
            url,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            driver_info=DRIVER_INFO,
        )
        return commands, pubsub

    # -- lifecycle

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        with unavailable():
            await asyncio.wait_for(self._redis.ping(), _CONNECT_TIMEOUT_S * 2)
            await self._store.load_scripts()
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
        """Stop reading and close every connection, within a few seconds whatever Redis
        does (each step is bounded, ``closing.py``). Idempotent."""
        self._closing = True
        tasks = (self._heartbeat_task, self._reader_task)
        self._heartbeat_task = self._reader_task = None
        await cancel_within(tasks, "the Redis reader and heartbeat")
        await self._store.close()  # bounded: each script pipeline's sender
        # Closed: no longer hearing anything (``ready`` turns false).
        self._pubsub = None
        self._connected.clear()
        # A goodbye, not a necessity (presence and the instance's status expire
        # a silent instance anyway): a Redis that does not answer must not hold
        # the shutdown.
        await finish_within(self._store.say_goodbye(), "the goodbye", _GOODBYE_TIMEOUT_S)
        await finish_within(self._redis.aclose(), "the command connections")
        await finish_within(self._pubsub_client.aclose(), "the pub/sub client")

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
            with unavailable():
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

    # -- publishing: commands, the same on every Redis broker (store.py, StoreBacked)

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        client: str | None = None,
        raw: str | None = None,
        idempotency_key: str | None = None,
    ) -> StreamPosition:
        if self._unheard and channel in self._channels:
            # Redis was unreachable and this process's reader is not subscribed
            # again: what it published now on a channel it delivers would be a gap
            # here, and after a restart its publishers' retried backlog lands at
            # once, past what history holds. Refused until the reader is back
            # (within 0.1 s of Redis). A reader that lost only its own connection
            # (CLIENT KILL, the output-buffer limit) reconnects at once and
            # refuses nothing; nor does a process that delivers nothing (a
            # Publisher), or a channel it has no subscriber of.
            raise BrokerUnavailable("broker unavailable: reconnecting")
        return await super().publish(
            channel, data, client=client, raw=raw, idempotency_key=idempotency_key
        )

    # -- the reader

    async def _read_forever(self) -> None:
        # Back within 0.1 s of Redis in the first seconds of an outage (half a second
        # at worst later on): every message published while the reader is away is a
        # gap to heal from history, and after a restart the publishers' retried
        # backlog lands at once; a slow return pushes the gap past --history-size
        # (the drills saw 1 to 2.8 s with a 2 s ceiling, and 106 messages landed in
        # the 0.17 s a reader took with a 0.5 s one). Attempts on a Redis that is
        # down cost a refused connection; one that is loading its data accepts
        # SUBSCRIBE (not the publish script), so the reader can be back first.
        backoff = PromptBackoff(_RECONNECT_PROMPT_S, _RECONNECT_PROMPT_FOR_S, _RECONNECT_MAX_S)
        outage_began_s: float | None = None
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
            if error is not None and not self._connected_at_s:
                self._unheard = True  # this attempt did not even connect
            if self._closing:
                return
            if session.cancelled():
                log.warning(
                    "broker pub/sub went deaf (nothing heard, own heartbeat included); reconnecting"
                )
            else:
                log.warning("broker pub/sub connection lost (%s); reconnecting", error)
            now_s = time.monotonic()
            if outage_began_s is None or (
                self._connected_at_s and now_s - self._connected_at_s > _RECONNECT_MAX_S
            ):
                # It was a working connection: a new outage, retried promptly. (One
                # that drops as soon as it connects does not start the clock again.)
                outage_began_s = now_s
                backoff.reset()
            self._connected_at_s = 0.0
            first = False
            # Jittered, so that many instances do not reconnect in lockstep
            # after a Redis restart.
            await asyncio.sleep(backoff.next_delay_s(now_s - outage_began_s))

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
                self._last_received_s = time.monotonic()
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        name: bytes = message["channel"]
        if kind == "message":
            if name == self._heartbeat_channel:
                self._last_heartbeat_s = time.monotonic()
                return
            try:
                event = decode_payload(channel_of(name), message["data"])
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
                if not self._resubscribing:
                    self._unheard = False
                if not self._resubscribing and self._handler is not None:
                    self._handler.on_resubscribed()

    def _reconnect_pubsub(self) -> None:
        """End the pub/sub session now; the reader reconnects, resubscribes and heals."""
        session = self._session_task
        if session is not None and not session.done():
            session.cancel()

    # -- heartbeat

    async def _heartbeat_forever(self) -> None:
        interval_s = self._options.heartbeat_interval_s
        deaf_after_s = 5 * interval_s
        # Not "while True": a cancellation that redis-py turned into a timeout (or any
        # error this loop rides over) must not keep it beating after close().
        while not self._closing:
            status = self._status_payload()
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.publish(self._heartbeat_channel, b"")
                    pipe.zadd(INSTANCES_KEY, {self._options.instance_id: now_ms()})
                    if status is not None:
                        # Expires with the heartbeat: a crashed instance's status goes too.
                        pipe.set(self._status_key, status, px=self._store.instance_expiry_ms)
                    await pipe.execute()
            session = self._session_task
            # Deaf only when nothing at all arrived: under overload the heartbeat waits
            # in the socket behind a backlog that the reader is still working through,
            # and dropping that connection would throw the backlog away.
            last = max(self._last_heartbeat_s, self._last_received_s, self._connected_at_s)
            deaf = self._pubsub is not None and time.monotonic() - last > deaf_after_s
            if deaf and session is not None and not session.done():
                # Connected but deaf (a half-open TCP connection, or Redis
                # stopped sending): only a new connection can tell.
                session.cancel()
            await asyncio.sleep(interval_s)
