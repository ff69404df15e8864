"""The in-process broker: one process, no Redis.

Its limit: nothing crosses a process boundary, so it serves exactly one
Sanic worker; everything else about it (offsets, epochs, history, TTLs,
presence) behaves as the Redis broker does.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..codec import check_data
from ..events import Event, Publication, StreamPosition, now_ms
from .base import BrokerHandler, BrokerOptions, InstanceStatus

__all__ = ["MemoryBroker"]


@dataclass(slots=True)
class _ChannelLog:
    epoch: str
    capacity: int
    #: When the epoch began, on the monotonic clock.
    born_s: float
    offset: int = 0
    history: deque[Publication] = field(init=False)
    #: The epoch's first publications that history trimmed, while it is new and not
    #: past ``epoch_start_kept`` (``Broker.epoch_start``).
    start: list[Publication] = field(default_factory=list)
    history_expires_s: float = 0.0
    meta_expires_s: float = 0.0

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.capacity or None)


class MemoryBroker:
    def __init__(self, options: BrokerOptions | None = None) -> None:
        self._options = options or BrokerOptions()
        # Channel logs survive subscriptions, as Redis keys do.
        self._logs: dict[str, _ChannelLog] = {}
        self._subscribed: set[str] = set()
        self._presence: dict[str, dict[str, Any]] = {}
        #: (channel, idempotency key) -> (the position it got, expiry on the monotonic clock).
        self._idempotency_keys: dict[tuple[str, str], tuple[StreamPosition, float]] = {}
        #: (channel, epoch) -> (the epoch that replaced it, expiry on the monotonic clock).
        #: Apart from the logs, as Redis keeps it apart from a channel's meta and history.
        self._successors: dict[tuple[str, str], tuple[str, float]] = {}
        self._handler: BrokerHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._status: Callable[[], InstanceStatus] | None = None

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        self._handler = None
        self._subscribed.clear()

    @property
    def ready(self) -> bool:
        return self._handler is not None

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    def _log(self, channel: str, now_s: float) -> _ChannelLog | None:
        log = self._logs.get(channel)
        if log is None:
            return None
        if now_s >= log.meta_expires_s:
            del self._logs[channel]
            return None
        if now_s >= log.history_expires_s:
            log.history.clear()
        if log.start and not self._is_new(log, now_s):
            log.start.clear()  # as the first publish after that trims it in Redis
        return log

    def _open_log(self, channel: str, now_s: float) -> _ChannelLog:
        """The channel's log; a channel without one (new, or expired) gets it with a fresh
        epoch now, with the lifetime a publish gives it. Nothing awaits in between, so a
        publish and a read of a new channel agree on one epoch, as the Redis scripts do."""
        log = self._log(channel, now_s)
        if log is None:
            log = self._logs[channel] = _ChannelLog(
                epoch=secrets.token_hex(4),
                capacity=self._options.history_size,
                born_s=now_s,
                meta_expires_s=now_s + self._meta_ttl_s,
            )
        return log

    @property
    def _meta_ttl_s(self) -> float:
        return max(self._options.meta_ttl_s, self._options.history_ttl_s)

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
        now_s = time.monotonic()
        if idempotency_key is not None:
            seen = self._idempotency_keys.get((channel, idempotency_key))
            if seen is not None and now_s < seen[1]:
                return seen[0]
        log = self._open_log(channel, now_s)
        log.offset += 1
        pub = Publication(
            channel=channel,
            offset=log.offset,
            epoch=log.epoch,
            data=data,
            client=client,
            ts_ms=now_ms(),
            raw=raw,
        )
        self._keep(log, pub, now_s)
        log.history_expires_s = now_s + self._options.history_ttl_s
        log.meta_expires_s = now_s + self._meta_ttl_s
        self._deliver(pub)
        position = StreamPosition(pub.offset, pub.epoch)
        if idempotency_key is not None:
            self._remember(channel, idempotency_key, position, now_s)
        return position

    def _keep(self, log: _ChannelLog, pub: Publication, now_s: float) -> None:
        """Add ``pub`` to history; what that trims is kept as the epoch's start while the
        epoch is new and not past ``epoch_start_kept``, as lua/publish.lua keeps it."""
        if self._options.history_size <= 0:
            return
        history = log.history
        if pub.offset > self._options.epoch_start_kept or not self._is_new(log, now_s):
            log.start.clear()
        elif len(history) == history.maxlen:
            log.start.append(history[0])  # trimmed by the append
        history.append(pub)

    def _is_new(self, log: _ChannelLog, now_s: float) -> bool:
        return now_s - log.born_s < self._options.epoch_start_kept_s

    def _remember(self, channel: str, key: str, position: StreamPosition, now_s: float) -> None:
        keys = self._idempotency_keys
        # Insertion order is expiry order (one TTL for all): drop the expired from the front.
        while keys:
            oldest = next(iter(keys))
            if keys[oldest][1] > now_s:
                break
            del keys[oldest]
        keys[(channel, key)] = (position, now_s + self._options.idempotency_ttl_s)

    async def publish_event(self, event: Event) -> None:
        if isinstance(event, Publication):
            raise TypeError("publications go through publish()")
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
        # call_soon keeps acceptance order and never runs subscribers inside
        # the publisher's call stack.
        subscribed = event.channel in self._subscribed
        if subscribed and self._handler is not None and self._loop is not None:
            self._loop.call_soon(self._handler.on_event, event)

    async def position(self, channel: str) -> StreamPosition:
        log = self._open_log(channel, time.monotonic())
        return StreamPosition(log.offset, log.epoch)

    async def peek_position(self, channel: str) -> StreamPosition | None:
        log = self._log(channel, time.monotonic())
        return None if log is None else StreamPosition(log.offset, log.epoch)

    async def history(
        self, channel: str, since: int | None, limit: int, *, epoch: str | None = None
    ) -> tuple[list[Publication], StreamPosition]:
        log = self._open_log(channel, time.monotonic())
        if since is not None and epoch is not None and epoch != log.epoch:
            since = 0  # another epoch: the channel's own from its start
        if since is None:
            kept = list(log.history)[-limit:] if limit > 0 else []
        else:
            kept = [pub for pub in log.history if pub.offset > since][:limit]
        return kept, StreamPosition(log.offset, log.epoch)

    async def epoch_start(
        self, channel: str, epoch: str, since: int, limit: int
    ) -> list[Publication]:
        now_s = time.monotonic()
        log = self._log(channel, now_s)
        if log is None or log.epoch != epoch or not self._is_new(log, now_s):
            return []
        return [pub for pub in log.start if pub.offset > since][: max(limit, 0)]

    async def supersede(self, channel: str, old_epoch: str, new_epoch: str) -> None:
        now_s = time.monotonic()
        successors = self._successors
        # Insertion order is expiry order (one TTL for all): drop the expired from the front.
        while successors:
            oldest = next(iter(successors))
            if successors[oldest][1] > now_s:
                break
            del successors[oldest]
        successors.pop((channel, old_epoch), None)
        ttl_s = max(1, self._options.history_ttl_s)
        successors[(channel, old_epoch)] = (new_epoch, now_s + ttl_s)

    async def successor(self, channel: str, epoch: str) -> str | None:
        recorded = self._successors.get((channel, epoch))
        if recorded is None or time.monotonic() >= recorded[1]:
            return None
        return recorded[0]

    async def add_presence(self, channel: str, client: str, info: Any) -> None:
        self._presence.setdefault(channel, {})[client] = info

    async def remove_presence(self, channel: str, client: str) -> None:
        clients = self._presence.get(channel)
        if clients is not None:
            clients.pop(client, None)
            if not clients:
                del self._presence[channel]

    async def presence(self, channel: str) -> dict[str, Any]:
        return dict(self._presence.get(channel, {}))

    def set_status(self, source: Callable[[], InstanceStatus]) -> None:
        self._status = source

    async def instances(self) -> list[InstanceStatus]:
        # One process: the only instance is this one, live while started.
        if self._handler is None or self._status is None:
            return []
        return [self._status()]
