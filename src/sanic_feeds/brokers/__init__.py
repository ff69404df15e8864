"""Brokers, chosen by URL scheme; each imported only when used."""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import Broker, BrokerHandler, BrokerOptions, InstanceStatus

__all__ = [
    "SUPPORTED_SCHEMES",
    "URL_FORMS",
    "Broker",
    "BrokerHandler",
    "BrokerOptions",
    "InstanceStatus",
    "check_reachable",
    "create_broker",
    "redact_url",
]

SUPPORTED_SCHEMES = ("memory", "redis", "rediss", "redis+cluster", "redis+sentinel")
#: What to tell someone who gave an unsupported URL.
URL_FORMS = (
    "memory://, redis://HOST:PORT/DB, redis+cluster://HOST:PORT[,HOST:PORT...] "
    "or redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]"
)


def create_broker(url: str, options: BrokerOptions | None = None) -> Broker:
    """The broker for ``url``: ``memory://``, ``redis://HOST:PORT/DB``,
    ``redis+cluster://HOST:PORT[,HOST:PORT...]`` or
    ``redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]``.

    Raises ``ValueError`` for a URL this version cannot serve.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker(options)
    if scheme in ("redis", "rediss"):
        from .redis import RedisBroker

        return RedisBroker(url, options)
    if scheme == "redis+cluster":
        from .cluster import ClusterBroker

        return ClusterBroker(url, options)
    if scheme == "redis+sentinel":
        from .sentinel import SentinelBroker

        return SentinelBroker(url, options)
    raise ValueError(f"unsupported broker URL {redact_url(url)!r}: use {URL_FORMS}")


async def check_reachable(url: str) -> None:
    """Raise when the Redis server(s) of ``url`` do not answer (``memory://`` always does);
    for a clear error before a server starts. ``ValueError`` for a malformed URL."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return
    from .reachable import check

    await check(scheme, url)


def redact_url(url: str) -> str:
    """``url`` with its credentials masked, for logs and the terminal."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
