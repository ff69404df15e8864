"""The Redis Cluster broker: sharded pub/sub for delivery, the same keys and scripts.

Commands (publish, history, presence: ``store.py``) go through redis-py's
``RedisCluster``, which routes each one, ``EVALSHA`` included, by the slot of its
keys; a channel's keys and its pub/sub name share the ``{channel}`` hash tag, so the
publish script runs on the shard that owns the channel and sends with ``SPUBLISH``
there. Delivery goes through readers of our own (``shard_reader.py``): one
connection per primary, on which each channel is ``SSUBSCRIBE``d where the slot map
(``CLUSTER SHARDS``) says its slot lives.

A subscription can end in three ways: the node sends ``sunsubscribe`` by itself
(the slot migrated, or a failover demoted it), the node answers ``SSUBSCRIBE``
with ``MOVED`` (our slot map is stale), or the connection fails (the node died).
All three are handled alike: the channel is marked lost, one maintenance task
reads the slot map again and subscribes it where it now lives, and once the node
confirms, the handler is told (``on_channels_resubscribed``) so that it heals what
was published meanwhile from history. Every shard connection carries this
instance's heartbeat: a connection on which nothing arrives any more, the heartbeat
included, is dropped like a dead one (one that is still reading a backlog is slow,
not deaf, and is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import MovedError, ResponseError

from ..backoff import Backoff
from ..errors import BrokerUnavailable
from ..events import now_ms
from .base import BrokerHandler, BrokerOptions, InstanceStatus
from .closing import cancel_within, finish_within
from .envelope import MalformedPayload, decode_payload
from .failures import REDIS_FAILURES, unavailable
from .keys import INSTANCES_KEY, channel_keys, channel_of, heartbeat_channel, status_key
from .shard_reader import ShardReader
from .slots import NodeAddress, SlotMap
from .store import RedisStore, StoreBacked
from .urls import parse_cluster_url

__all__ = ["ClusterBroker"]

log = logging.getLogger("sanic_feeds.broker")

_CONNECT_TIMEOUT_S = 2.0
_COMMAND_TIMEOUT_S = 5.0
#: Command connections per node. RedisCluster fails a command when a node has no
#: connection left, so the store keeps fewer commands than this in flight.
_NODE_CONNECTIONS = 100
_SUBSCRIBE_TIMEOUT_S = 5.0
#: How long close() waits for the cluster to take the instance off the instances set.
_GOODBYE_TIMEOUT_S = 0.5
#: Addresses that redirected us lately, asked first for the slot map.
_HINTS = 8


class ClusterBroker(StoreBacked):
    """``redis+cluster://HOST:PORT[,HOST:PORT...]``; see the module's docstring."""

    def __init__(self, url: str, options: BrokerOptions | None = None) -> None:
        parsed = parse_cluster_url(url)
        self._startup_nodes = parsed.nodes
        self._username = parsed.username
        self._password = parsed.password
        self._options = options or BrokerOptions()
        self._status_key = status_key(self._options.instance_id)
        # Commands: the same quick retries as the single-Redis broker; a cluster
        # that lost a primary answers CLUSTERDOWN until its replica takes over,
        # and callers get BrokerUnavailable meanwhile.
        self._cluster = RedisCluster(
            startup_nodes=[ClusterNode(a.host, a.port) for a in parsed.nodes],
            username=parsed.username,
            password=parsed.password,
            require_full_coverage=False,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            socket_timeout=_COMMAND_TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 3),
            max_connections=_NODE_CONNECTIONS,
        )
        self._store = RedisStore(
            self._cluster, self._options, sharded=True, max_concurrent=_NODE_CONNECTIONS // 2
        )
        self._handler: BrokerHandler | None = None
        #: The slot map the readers follow; None until read.
        self._slot_map: SlotMap | None = None
        #: One reader per primary of the slot map (those that could be reached).
        self._readers: dict[NodeAddress, ShardReader] = {}
        #: Channels this process wants delivered (the hub reference-counts).
        self._channels: set[str] = set()
        #: Where each channel was SSUBSCRIBEd (confirmed or not).
        self._assigned: dict[str, ShardReader] = {}
        #: Channels the node they are assigned to confirmed.
        self._live: set[str] = set()
        #: Wanted channels subscribed nowhere: the maintenance task places them.
        self._lost: set[str] = set()
        #: Channels that lost a live subscription: the handler hears of them when
        #: they are live again, to heal what they missed.
        self._to_heal: set[str] = set()
        #: Subscribe calls waiting for a node to confirm, by channel.
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        #: Nodes that answered MOVED lately: they know where slots went.
        self._hints: list[NodeAddress] = []
        self._remap = asyncio.Event()
        self._maintainer_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        #: What each heartbeat tells the other instances about this one.
        self._status: Callable[[], InstanceStatus] | None = None
        self._closing = False

    # -- lifecycle

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        with unavailable():
            await asyncio.wait_for(self._cluster.initialize(), _CONNECT_TIMEOUT_S * 2)
            await self._store.load_scripts()
        self._remap.set()
        self._maintainer_task = asyncio.create_task(
            self._maintain_forever(), name="feeds-cluster-maintainer"
        )
        self._heartbeat_task = asyncio.create_task(
            self._heartbeat_forever(), name="feeds-cluster-heartbeat"
        )
        deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT_S
        while not self._covered():
            if time.monotonic() > deadline:
                await self.close()
                raise BrokerUnavailable("broker unavailable: cannot reach every primary")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self._closing = True
        tasks = (self._heartbeat_task, self._maintainer_task)
        self._heartbeat_task = self._maintainer_task = None
        await cancel_within(tasks, "the cluster's heartbeat and maintainer")
        await self._store.close()  # bounded: each script pipeline's sender
        readers, self._readers = list(self._readers.values()), {}
        # Each bounded on its own (shard_reader.py): together, not one after the other.
        await asyncio.gather(*(reader.close() for reader in readers))
        self._slot_map = None
        for confirmed in self._confirmations.values():
            if not confirmed.done():
                confirmed.set_exception(BrokerUnavailable("broker unavailable: closing"))
        # A goodbye, not a necessity (presence and the status expire a silent
        # instance anyway): a cluster that does not answer must not hold the shutdown.
        await finish_within(self._store.say_goodbye(), "the goodbye", _GOODBYE_TIMEOUT_S)
        await finish_within(self._cluster.aclose(), "the cluster client")

    @property
    def ready(self) -> bool:
        if not self._covered() or self._lost or self._to_heal:
            return False
        fresh_s = 3 * self._options.heartbeat_interval_s
        now = time.monotonic()
        return all(now - reader.heard_s < fresh_s for reader in self._readers.values())

    def _covered(self) -> bool:
        """Every primary of the slot map has a reader whose heartbeat is subscribed."""
        slot_map = self._slot_map
        if self._closing or slot_map is None:
            return False
        for primary in slot_map.primaries:
            reader = self._readers.get(primary)
            if reader is None or not reader.heartbeat_live:
                return False
        return True

    # -- subscriptions

    async def subscribe(self, channel: str) -> None:
        if self._closing or self._slot_map is None:
            raise BrokerUnavailable("broker unavailable: not started")
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirmations[channel] = confirmed
        self._channels.add(channel)
        try:
            reader = self._owner(channel)
            if reader is None:
                self._lose(channel)
            else:
                await self._send_subscribe(reader, channel)
            with unavailable():
                await asyncio.wait_for(asyncio.shield(confirmed), _SUBSCRIBE_TIMEOUT_S)
        except BaseException:
            self._channels.discard(channel)
            self._lost.discard(channel)
            raise
        finally:
            if self._confirmations.get(channel) is confirmed:
                del self._confirmations[channel]

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self._lost.discard(channel)
        self._to_heal.discard(channel)
        self._live.discard(channel)
        reader = self._assigned.pop(channel, None)
        if reader is not None and self._readers.get(reader.address) is reader:
            # A failure here means the connection is gone, and with it the subscription.
            with contextlib.suppress(*REDIS_FAILURES):
                await reader.unsubscribe(channel_keys(channel).pubsub.encode())

    def _owner(self, channel: str) -> ShardReader | None:
        """The reader of the primary that owns ``channel``'s slot, by our slot map."""
        slot_map = self._slot_map
        owner = None if slot_map is None else slot_map.owner_of(channel_keys(channel).pubsub)
        return None if owner is None else self._readers.get(owner)

    async def _send_subscribe(self, reader: ShardReader, channel: str) -> None:
        self._assigned[channel] = reader
        with contextlib.suppress(*REDIS_FAILURES):
            await reader.subscribe(channel_keys(channel).pubsub.encode())
        if (
            self._readers.get(reader.address) is not reader
            and self._assigned.get(channel) is reader
        ):
            # The reader went away meanwhile, without this channel.
            self._lose(channel)

    def _lose(self, channel: str) -> None:
        """``channel`` is subscribed nowhere now: place it again (if still wanted)."""
        if self._assigned.pop(channel, None) is not None and channel in self._live:
            self._live.discard(channel)
            self._to_heal.add(channel)
        if channel in self._channels:
            self._lost.add(channel)
            self._remap.set()

    def _reader_gone(self, reader: ShardReader) -> None:
        if self._readers.get(reader.address) is reader:
            del self._readers[reader.address]
        for channel in [c for c, r in self._assigned.items() if r is reader]:
            self._lose(channel)
        self._remap.set()

    # -- what the readers tell (ShardListener)

    def on_message(self, reader: ShardReader, name: bytes, payload: bytes) -> None:
        if name == reader.heartbeat:
            reader.heard_s = time.monotonic()
            return
        channel = channel_of(name)
        if channel not in self._channels or self._handler is None:
            return
        try:
            event = decode_payload(channel, payload)
        except MalformedPayload as exc:
            log.warning("ignoring %s", exc)
            return
        self._handler.on_event(event)

    def on_subscribed(self, reader: ShardReader, name: bytes) -> None:
        if name == reader.heartbeat:
            reader.heartbeat_live = True
            return
        channel = channel_of(name)
        if self._assigned.get(channel) is not reader or channel not in self._channels:
            return
        self._live.add(channel)
        confirmed = self._confirmations.get(channel)
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)
        if channel in self._to_heal:
            self._to_heal.discard(channel)
            if self._handler is not None:
                self._handler.on_channels_resubscribed([channel])

    def on_refused(self, reader: ShardReader, name: bytes, error: ResponseError) -> None:
        if isinstance(error, MovedError):
            self._hint(NodeAddress(error.host, int(error.port)))
        log.info("%s refused %r: %s; reading the slot map again", reader.address, name, error)
        if name == reader.heartbeat:
            reader.heartbeat, reader.heartbeat_live = None, False
            self._remap.set()
            return
        channel = channel_of(name)
        if self._assigned.get(channel) is reader:
            self._lose(channel)

    def on_dropped(self, reader: ShardReader, name: bytes) -> None:
        if name == reader.heartbeat:
            reader.heartbeat, reader.heartbeat_live = None, False
            self._remap.set()
            return
        channel = channel_of(name)
        if self._assigned.get(channel) is reader:
            log.info("%s dropped %r (its slot moved); placing it again", reader.address, channel)
            self._lose(channel)

    def on_closed(self, reader: ShardReader, error: BaseException | None) -> None:
        if not self._closing:
            log.warning(
                "connection to %s lost (%s); reading the slot map again", reader.address, error
            )
        self._reader_gone(reader)

    # -- the slot map, readers and placement

    def _hint(self, address: NodeAddress) -> None:
        if address in self._hints:
            self._hints.remove(address)
        self._hints.insert(0, address)
        del self._hints[_HINTS:]

    async def _maintain_forever(self) -> None:
        backoff = Backoff()
        while not self._closing:  # see RedisBroker._heartbeat_forever
            await self._remap.wait()
            self._remap.clear()
            try:
                done = await self._place()
            except REDIS_FAILURES as exc:
                log.warning("cannot read the cluster's slot map: %s", exc)
                done = False
            if done:
                backoff.reset()
                continue
            # Something could not be placed (a primary is down and its replica
            # not promoted yet, a slot is migrating): try again, jittered.
            self._remap.set()
            await asyncio.sleep(backoff.next_delay_s())

    async def _place(self) -> bool:
        """Read the slot map, keep one reader per primary, give each its heartbeat and
        subscribe each lost channel on its owner. True when nothing is left to do."""
        slot_map = await self._read_slot_map()
        self._slot_map = slot_map
        # Nodes that are no longer primaries lose their reader (and their channels).
        for address, reader in list(self._readers.items()):
            if address not in slot_map.primaries:
                await reader.close()
                self._reader_gone(reader)
        # A reader for each primary.
        missing = [a for a in sorted(slot_map.primaries) if a not in self._readers]
        opened = await asyncio.gather(*(self._open_reader(a) for a in missing))
        done = all(opened)
        # Each reader hears the heartbeat through a name in one of its slots.
        for reader in list(self._readers.values()):
            if (
                reader.heartbeat is not None
                and slot_map.owner_of(reader.heartbeat) == reader.address
            ):
                continue
            tag = slot_map.tag_on(reader.address)
            old = reader.heartbeat
            name = reader.heartbeat = heartbeat_channel(self._options.instance_id, tag)
            reader.heartbeat_live = False
            with contextlib.suppress(*REDIS_FAILURES):
                if old is not None:
                    await reader.unsubscribe(old)
                await reader.subscribe(name)
        # Each lost channel to its owner.
        for channel in sorted(self._lost):
            if channel not in self._lost:
                continue  # placed or unsubscribed meanwhile
            owner = self._owner(channel)
            if owner is None:
                done = False
                continue
            self._lost.discard(channel)
            await self._send_subscribe(owner, channel)
        return done and not self._lost

    async def _open_reader(self, address: NodeAddress) -> bool:
        reader = ShardReader(
            address,
            self,
            username=self._username,
            password=self._password,
            # CLIENT LIST tells which instance a connection belongs to.
            client_name=f"feeds-{self._options.instance_id}",
            connect_timeout_s=_CONNECT_TIMEOUT_S,
        )
        try:
            await reader.open()
        except REDIS_FAILURES as exc:
            log.warning("cannot connect to %s: %s", address, exc)
            await reader.close()
            return False
        if self._closing:
            await reader.close()
            return False
        self._readers[address] = reader
        return True

    async def _read_slot_map(self) -> SlotMap:
        """``CLUSTER SHARDS`` from the first node that answers: those that redirected
        us lately, the primaries we know, the URL's nodes."""
        known = self._slot_map.primaries if self._slot_map is not None else frozenset()
        candidates = dict.fromkeys([*self._hints, *sorted(known), *self._startup_nodes])
        error: Exception = BrokerUnavailable("no node of the cluster to ask")
        for address in candidates:
            client = Redis(
                host=address.host,
                port=address.port,
                username=self._username,
                password=self._password,
                socket_connect_timeout=_CONNECT_TIMEOUT_S,
                socket_timeout=_CONNECT_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
                protocol=2,
            )
            try:
                reply = await client.execute_command("CLUSTER SHARDS")  # type: ignore[no-untyped-call]
                slot_map = SlotMap.from_shards(reply)
            except REDIS_FAILURES as exc:
                error = exc
                continue
            finally:
                await client.aclose()
            if slot_map.primaries:
                return slot_map
        raise error

    # -- heartbeat

    async def _heartbeat_forever(self) -> None:
        interval_s = self._options.heartbeat_interval_s
        deaf_after_s = 5 * interval_s
        while not self._closing:  # see RedisBroker._heartbeat_forever
            readers = list(self._readers.values())
            beats = [
                self._cluster.spublish(reader.heartbeat, b"")
                for reader in readers
                if reader.heartbeat is not None
            ]
            registry: list[Awaitable[Any]] = [
                self._cluster.zadd(INSTANCES_KEY, {self._options.instance_id: now_ms()})
            ]
            status = self._status_payload()
            if status is not None:
                # Expires with the heartbeat: a crashed instance's status goes too.
                expiry_ms = self._store.instance_expiry_ms
                registry.append(self._cluster.set(self._status_key, status, px=expiry_ms))
            with contextlib.suppress(*REDIS_FAILURES):
                # Bounded, so that one unreachable node does not delay the others'
                # beats and the deafness checks below.
                await asyncio.wait_for(
                    asyncio.gather(*beats, *registry, return_exceptions=True),
                    max(interval_s, _CONNECT_TIMEOUT_S),
                )
            now = time.monotonic()
            for reader in readers:
                # Deaf only when nothing at all arrived: under overload the heartbeat
                # waits in the socket behind a backlog that the reader is still working
                # through, and dropping that connection would throw the backlog away.
                last = max(reader.heard_s, reader.received_s, reader.connected_at_s)
                if now - last > deaf_after_s and self._readers.get(reader.address) is reader:
                    # Connected but deaf (a half-open TCP connection, or a node that
                    # stopped sending): only a new connection can tell.
                    log.warning(
                        "connection to %s went deaf (nothing heard for %.1f s, own heartbeat "
                        "included)",
                        reader.address,
                        now - last,
                    )
                    await reader.close()
                    self._reader_gone(reader)
            await asyncio.sleep(interval_s)
