"""Is a broker's Redis there? One round trip, before a server starts, for a clear error."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from .urls import parse_cluster_url, parse_sentinel_url

__all__ = ["check"]

_TIMEOUT_S = 3.0


async def check(scheme: str, url: str) -> None:
    """Raise (``RedisError``, ``OSError``, ``ValueError``) unless the server(s) of ``url``,
    whose scheme is ``scheme``, answer ``PING``: the master Sentinel names, or every
    primary of a cluster."""
    if scheme == "redis+cluster":
        parsed = parse_cluster_url(url)
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(a.host, a.port) for a in parsed.nodes],
            username=parsed.username,
            password=parsed.password,
            require_full_coverage=False,
            socket_connect_timeout=_TIMEOUT_S,
            socket_timeout=_TIMEOUT_S,
        )
        try:
            await cluster.ping(target_nodes=RedisCluster.PRIMARIES)
        finally:
            await cluster.aclose()
    elif scheme == "redis+sentinel":
        sentinel_url = parse_sentinel_url(url)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [(a.host, a.port) for a in sentinel_url.sentinels],
            sentinel_kwargs={
                "socket_connect_timeout": _TIMEOUT_S,
                "socket_timeout": _TIMEOUT_S,
                "retry": Retry(NoBackoff(), 0),
            },
            socket_connect_timeout=_TIMEOUT_S,
            socket_timeout=_TIMEOUT_S,
            db=sentinel_url.db,
            username=sentinel_url.username,
            password=sentinel_url.password,
        )
        try:
            master = sentinel.master_for(sentinel_url.master)
            try:
                await master.ping()
            finally:
                await master.aclose()
        finally:
            await sentinel.aclose()
    else:
        client = Redis.from_url(url, socket_connect_timeout=_TIMEOUT_S, socket_timeout=_TIMEOUT_S)
        try:
            await client.ping()
        finally:
            await client.aclose()
