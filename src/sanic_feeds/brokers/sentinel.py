"""The Sentinel broker: the Redis broker, on whichever server Sentinel says is the master.

Everything is the single-Redis broker's (``redis.py``): one pub/sub connection, one
reader, the same keys and scripts. Only where connections go differs: every new
connection asks the Sentinels for the current master (redis-py's
``redis.asyncio.sentinel``). After a failover the old master's connections fail
(Sentinel kills the clients of a master it demotes, and a dead master drops them
anyway); commands retry on the new master, and the reader reconnects there,
resubscribes and heals the gap from history, as after any reconnect. What the old
master accepted but had not replicated when it failed is lost: the new master's
history does not have it, and clients are told ``recovered: false`` if they needed it.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff

from .base import BrokerOptions
from .redis import RedisBroker
from .urls import parse_sentinel_url

__all__ = ["SentinelBroker"]

_CONNECT_TIMEOUT_S = 2.0
_COMMAND_TIMEOUT_S = 5.0


class SentinelBroker(RedisBroker):
    """``redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]``."""

    def __init__(self, url: str, options: BrokerOptions | None = None) -> None:
        parsed = parse_sentinel_url(url)
        self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [(a.host, a.port) for a in parsed.sentinels],
            # Asking the Sentinels: quick, and on to the next one when one is down.
            sentinel_kwargs={
                "socket_connect_timeout": _CONNECT_TIMEOUT_S,
                "socket_timeout": _CONNECT_TIMEOUT_S,
            },
            db=parsed.db,
            username=parsed.username,
            password=parsed.password,
        )
        self._master = parsed.master
        super().__init__(url, options)

    def _clients(self, url: str) -> tuple[Redis, Redis]:
        # The same settings as the Redis broker's clients: commands retry a few
        # times (over a failover's stale connections, onto the new master),
        # pub/sub never retries inside redis-py (the reader reconnects and heals).
        commands = self._sentinel.master_for(
            self._master,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            socket_timeout=_COMMAND_TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 3),
        )
        pubsub = self._sentinel.master_for(
            self._master,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        return commands, pubsub

    async def close(self) -> None:
        await super().close()
        await self._sentinel.aclose()
