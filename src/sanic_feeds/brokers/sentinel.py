"""The Sentinel broker: the Redis broker, on whichever server Sentinel says is the master.

Everything is the single-Redis broker's (``redis.py``): one pub/sub connection, one
reader, the same keys and scripts. Only where connections go differs: every new
connection asks the Sentinels for the current master (redis-py's
``redis.asyncio.sentinel``). After a failover the old master's connections fail
(Sentinel kills the clients of a master it demotes, and a dead master drops them
anyway); commands retry on the new master, and the reader reconnects there,
resubscribes and heals the gap from history, as after any reconnect.

Sentinel can also promote a replica while the old master still runs (``SENTINEL
FAILOVER``, or a master cut off from the Sentinels only): it demotes the old one
seconds later, and until then pooled connections would keep writing there. So the
broker asks the Sentinels every heartbeat, and when they name another master it
drops every connection at once; a connection that was being opened as they
switched, and reached the old master, is not handed out (``_MasterPool``).
What the old master accepted and did not replicate is lost all the same
(Redis replicates asynchronously); run masters with ``min-replicas-to-write 1``
(and two replicas) to have it refuse such writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError

from .base import BrokerHandler, BrokerOptions
from .closing import cancel_within, finish_within
from .redis import DRIVER_INFO, RedisBroker
from .urls import parse_sentinel_url

__all__ = ["SentinelBroker"]

log = logging.getLogger("sanic_feeds.broker")

_CONNECT_TIMEOUT_S = 2.0
_COMMAND_TIMEOUT_S = 5.0


class SentinelBroker(RedisBroker):
    """``redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]``."""

    def __init__(self, url: str, options: BrokerOptions | None = None) -> None:
        parsed = parse_sentinel_url(url)
        self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [(a.host, a.port) for a in parsed.sentinels],
            # Asking the Sentinels: quick, and on to the next one when one is down
            # (redis-py's default retries would wait seconds on each).
            sentinel_kwargs={
                "socket_connect_timeout": _CONNECT_TIMEOUT_S,
                "socket_timeout": _CONNECT_TIMEOUT_S,
                "retry": Retry(NoBackoff(), 0),
            },
            db=parsed.db,
            username=parsed.username,
            password=parsed.password,
        )
        self._master = parsed.master
        self._watch_task: asyncio.Task[None] | None = None
        super().__init__(url, options)

    def _clients(self, url: str) -> tuple[Redis, Redis]:
        # The same settings as the Redis broker's clients: commands retry a few
        # times (over a failover's stale connections, onto the new master),
        # pub/sub never retries inside redis-py (the reader reconnects and heals).
        commands = self._sentinel.master_for(
            self._master,
            connection_pool_class=_MasterPool,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            socket_timeout=_COMMAND_TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 3),
            driver_info=DRIVER_INFO,
        )
        pubsub = self._sentinel.master_for(
            self._master,
            connection_pool_class=_MasterPool,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            driver_info=DRIVER_INFO,
        )
        return commands, pubsub

    async def start(self, handler: BrokerHandler) -> None:
        await super().start(handler)
        self._watch_task = asyncio.create_task(self._watch_master(), name="feeds-sentinel-watch")

    async def close(self) -> None:
        self._closing = True
        task, self._watch_task = self._watch_task, None
        await cancel_within((task,), "the Sentinel watch")
        await super().close()
        await finish_within(self._sentinel.aclose(), "the Sentinel client")

    async def _watch_master(self) -> None:
        known: tuple[str, int] | None = None
        while not self._closing:  # see RedisBroker._heartbeat_forever
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                address = tuple(await self._sentinel.discover_master(self._master))
                if known is not None and address != known:
                    log.warning(
                        "Sentinel names a new master for %r (%s:%s): reconnecting",
                        self._master,
                        *address,
                    )
                # Checked every time, not only at the switch: a connection that was
                # asking the Sentinels as they switched may have reached the old one.
                if _follow(self._redis, address):
                    # Every connection goes, in use or not (a command in flight is
                    # retried on the new master).
                    await self._redis.connection_pool.disconnect()
                if _follow(self._pubsub_client, address):
                    self._reconnect_pubsub()  # the reader reconnects and heals
                known = address  # type: ignore[assignment,unused-ignore]
            await asyncio.sleep(self._options.heartbeat_interval_s)


def _follow(client: Redis, master: tuple[object, ...]) -> bool:
    """Point ``client``'s pool at ``master``; True when it pointed elsewhere."""
    pool = client.connection_pool
    if not isinstance(pool, _MasterPool) or pool.master_address in (None, master):
        return False
    pool.master_address = master
    return True


class _MasterPool(SentinelConnectionPool):
    """A Sentinel pool that hands out no connection to a server other than the master it
    knows of: one connected elsewhere (it was connecting while Sentinel switched
    masters) connects again, asking the Sentinels."""

    async def get_connection(self, *args: object, **kwargs: object) -> AbstractConnection:
        connection: AbstractConnection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        address = (getattr(connection, "host", None), getattr(connection, "port", None))
        if self.master_address is not None and address != tuple(self.master_address):
            await connection.disconnect()
            await connection.connect()  # type: ignore[no-untyped-call]
        return connection
