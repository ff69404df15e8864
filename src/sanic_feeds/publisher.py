"""``Publisher``: publish from a process that runs no server (a worker, a cron job)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from .brokers import Broker, BrokerOptions, create_broker
from .channels import validate_channel
from .protocol import StreamPosition

__all__ = ["Publisher"]


class _NoDelivery:
    """A publisher subscribes to nothing, so deliveries never come."""

    def on_event(self, event: object) -> None: ...

    def on_resubscribed(self) -> None: ...


class Publisher:
    """Speaks to the broker directly::

        async with Publisher("redis://127.0.0.1:6379/0") as pub:
            await pub.publish("news", {"title": "hello"})

    ``history_size`` and ``history_ttl_s`` must match the servers' settings,
    since the publisher trims history as it appends. ``memory://`` works
    only inside the process that serves it, so it is refused here.
    """

    def __init__(self, url: str, *, history_size: int = 100, history_ttl_s: int = 300) -> None:
        if url.startswith("memory:"):
            raise ValueError(
                "memory:// is in-process: publish with Feeds.publish() in the server's "
                "process, or use a redis:// broker"
            )
        self._broker: Broker = create_broker(
            url, BrokerOptions(history_size=history_size, history_ttl_s=history_ttl_s)
        )
        self._started = False

    async def __aenter__(self) -> Publisher:
        await self._broker.start(_NoDelivery())
        self._started = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def publish(self, channel: str, data: Any) -> StreamPosition:
        """Publish ``data`` (any JSON value); returns the broker-assigned offset and epoch."""
        if not self._started:
            raise RuntimeError("use 'async with Publisher(url) as pub:'")
        return await self._broker.publish(validate_channel(channel), data)

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self._broker.close()
