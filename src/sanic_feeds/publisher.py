"""``Publisher``: publish from a process that runs no server (a worker, a cron job).

With ``retry_buffer=N`` publications go through a bounded queue and one
sender task that publishes them in order and retries each, with backoff and
jitter, while the broker is unreachable. Every queued publication carries an
idempotency key, so a retry after a reply was lost (Redis restarting between
running the publish and answering it) returns the first publish's offset
instead of publishing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .backoff import Backoff
from .brokers import Broker, BrokerOptions, create_broker
from .codec import check_data
from .errors import BrokerUnavailable
from .events import StreamPosition
from .names import validate_channel, validate_idempotency_key

__all__ = ["PublishBufferFull", "Publisher"]

log = logging.getLogger("sanic_feeds.publisher")


class PublishBufferFull(BrokerUnavailable):
    """``publish_nowait`` found the retry buffer full: the broker has been away too long."""


class _NoDelivery:
    """A publisher subscribes to nothing, so deliveries never come."""

    def on_event(self, event: object) -> None: ...

    def on_resubscribed(self) -> None: ...

    def on_channels_resubscribed(self, channels: object) -> None: ...


def _retrieve(future: asyncio.Future[StreamPosition]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(slots=True)
class _Pending:
    channel: str
    data: Any
    idempotency_key: str
    give_up_at_s: float
    accepted: asyncio.Future[StreamPosition] = field(repr=False)
    #: Set once the sender is done with it; unlike ``accepted``, no caller can cancel it.
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


class Publisher:
    """Speaks to the broker directly::

        async with Publisher("redis://127.0.0.1:6379/0") as pub:
            await pub.publish("news", {"title": "hello"})

    ``retry_buffer=0`` (the default): each ``publish`` is one attempt and
    raises :class:`BrokerUnavailable` if the broker cannot be reached.

    ``retry_buffer=N``: up to N publications wait in order while the broker
    is away; each is retried for ``retry_for_s`` seconds before its
    ``publish`` raises ``BrokerUnavailable``. ``publish`` waits for room in a
    full buffer; ``publish_nowait`` raises :class:`PublishBufferFull`
    instead. Leaving ``async with`` (or ``close()``) waits for the buffer to
    drain, within each publication's own ``retry_for_s``.

    ``history_size``, ``history_ttl_s`` and ``recovery_max`` must be the servers'
    own ``--history-size``, ``--history-ttl`` and ``--recovery-max``: every
    publish, from a server or a publisher, trims the channel's history to the
    size it was given (and keeps a new epoch's first ``recovery_max``
    publications apart for 30 s, for the clients of the epoch it replaced) and
    resets the history's expiry to the TTL it was given. The defaults (100,
    300 and 300) are the servers' defaults; a publisher left on them, next to
    servers that keep more, cuts the history down at its first publish, and
    clients can no longer recover what the servers promise. To use the
    servers' values from their ``FEEDS_*`` environment variables::

        from sanic_feeds import load_settings

        settings = load_settings()
        pub = Publisher(url, history_size=settings.history_size,
                        history_ttl_s=settings.history_ttl_s,
                        recovery_max=settings.recovery_max)

    ``memory://`` works only inside the process that serves it, so it is
    refused here. ``broker`` may also be a
    :class:`~sanic_feeds.brokers.base.Broker` object (its own options then
    apply, not ``history_size``, ``history_ttl_s`` and ``recovery_max``); the
    publisher starts and closes it.
    """

    def __init__(
        self,
        broker: Broker | str,
        *,
        history_size: int = 100,
        history_ttl_s: int = 300,
        recovery_max: int = 300,
        retry_buffer: int = 0,
        retry_for_s: float = 30.0,
    ) -> None:
        if isinstance(broker, str) and broker.startswith("memory:"):
            raise ValueError(
                "memory:// is in-process: publish with Feeds.publish() in the server's "
                "process, or use a redis:// broker"
            )
        if retry_buffer < 0:
            raise ValueError("retry_buffer must be 0 (no retries) or more")
        options = BrokerOptions(
            history_size=history_size,
            history_ttl_s=history_ttl_s,
            epoch_start_kept=recovery_max,
        )
        if not 0 < retry_for_s <= options.idempotency_ttl_s:
            # Past the key's lifetime, a retry after a lost reply could publish twice.
            raise ValueError(
                f"retry_for_s must be positive and at most {options.idempotency_ttl_s} "
                "(how long Redis remembers an idempotency key)"
            )
        self._broker: Broker = create_broker(broker, options) if isinstance(broker, str) else broker
        self._retry_buffer = retry_buffer
        self._retry_for_s = retry_for_s
        self._pending: deque[_Pending] = deque()
        #: Set while the buffer has room; publish() waits on it when full.
        self._room = asyncio.Event()
        self._room.set()
        #: Set while something waits to be sent; the sender sleeps on it.
        self._work = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._started = False

    async def __aenter__(self) -> Publisher:
        await self._broker.start(_NoDelivery())
        self._started = True
        if self._retry_buffer:
            self._sender = asyncio.create_task(self._send_forever(), name="feeds-publisher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def buffered(self) -> int:
        """Publications queued or being retried, not yet accepted by the broker."""
        return len(self._pending)

    async def publish(
        self, channel: str, data: Any, *, idempotency_key: str | None = None
    ) -> StreamPosition:
        """Publish ``data`` (any JSON value); returns the broker-assigned offset and epoch.

        ``idempotency_key``: publishing again on ``channel`` with a key used in
        the last 5 minutes publishes nothing and returns the first position.
        """
        self._check_started()
        if not self._retry_buffer:
            validate_channel(channel)
            if idempotency_key is not None:
                validate_idempotency_key(idempotency_key)
            return await self._broker.publish(channel, data, idempotency_key=idempotency_key)
        while len(self._pending) >= self._retry_buffer:
            self._room.clear()
            await self._room.wait()
        return await self.publish_nowait(channel, data, idempotency_key=idempotency_key)

    def publish_nowait(
        self, channel: str, data: Any, *, idempotency_key: str | None = None
    ) -> asyncio.Future[StreamPosition]:
        """Queue a publication and return the future of its position (needs ``retry_buffer``).

        Raises :class:`PublishBufferFull` when ``retry_buffer`` publications are
        already waiting, ``BadRequest`` for data nested too deep. Publications leave in
        the order they were queued.
        """
        self._check_started()
        if not self._retry_buffer:
            raise RuntimeError("publish_nowait needs Publisher(url, retry_buffer=N)")
        validate_channel(channel)
        # Refused now rather than by the sender, which would not tell this caller.
        check_data(data)
        if idempotency_key is None:
            idempotency_key = uuid.uuid4().hex
        else:
            validate_idempotency_key(idempotency_key)
        if len(self._pending) >= self._retry_buffer:
            raise PublishBufferFull(
                f"publish buffer full ({self._retry_buffer} publications wait for the broker)"
            )
        accepted: asyncio.Future[StreamPosition] = asyncio.get_running_loop().create_future()
        # A caller may drop the future; a failure is logged by the sender already.
        accepted.add_done_callback(_retrieve)
        self._pending.append(
            _Pending(channel, data, idempotency_key, time.monotonic() + self._retry_for_s, accepted)
        )
        self._work.set()
        return accepted

    async def flush(self) -> None:
        """Wait until every buffered publication was accepted or given up."""
        while self._pending:
            await self._pending[-1].finished.wait()

    async def close(self) -> None:
        """Drain the buffer (each publication within its ``retry_for_s``), then disconnect."""
        if not self._started:
            return
        await self.flush()
        self._started = False
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        await self._broker.close()

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("use 'async with Publisher(url) as pub:'")

    async def _send_forever(self) -> None:
        while True:
            if not self._pending:
                self._work.clear()
                await self._work.wait()
                continue
            item = self._pending[0]
            try:
                await self._send(item)
            finally:
                item.finished.set()
            self._pending.popleft()
            self._room.set()

    async def _send(self, item: _Pending) -> None:
        """Publish ``item``, retrying while the broker is away, until its deadline."""
        backoff = Backoff()
        while True:
            if time.monotonic() >= item.give_up_at_s:
                # It waited its whole retry_for_s behind others: give up without an attempt,
                # which against an unreachable Redis would cost seconds more.
                self._give_up(item, BrokerUnavailable("broker unavailable: retry_for_s elapsed"))
                return
            try:
                position = await self._broker.publish(
                    item.channel, item.data, idempotency_key=item.idempotency_key
                )
            except BrokerUnavailable as exc:
                remaining_s = item.give_up_at_s - time.monotonic()
                if remaining_s <= 0:
                    self._give_up(item, exc)
                    return
                # Full jitter: many workers coming back at once do not stampede Redis.
                await asyncio.sleep(min(remaining_s, backoff.next_delay_s()))
                continue
            except Exception as exc:
                # Not retryable (data that cannot be encoded, say): this one fails, the rest go on.
                if not item.accepted.done():
                    item.accepted.set_exception(exc)
                return
            if not item.accepted.done():
                item.accepted.set_result(position)
            return

    @staticmethod
    def _give_up(item: _Pending, exc: BrokerUnavailable) -> None:
        log.warning("gave up publishing on %r: %s", item.channel, exc)
        if not item.accepted.done():
            item.accepted.set_exception(exc)
