"""Brokers, chosen by URL scheme; each imported only when used."""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import Broker, BrokerHandler, BrokerOptions, InstanceStatus

__all__ = [
    "SUPPORTED_SCHEMES",
    "Broker",
    "BrokerHandler",
    "BrokerOptions",
    "InstanceStatus",
    "create_broker",
    "redact_url",
]

SUPPORTED_SCHEMES = ("memory", "redis", "rediss")


def create_broker(url: str, options: BrokerOptions | None = None) -> Broker:
    """The broker for ``url``: ``memory://`` or ``redis://HOST:PORT/DB``.

    Raises ``ValueError`` for a URL this version cannot serve.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker(options)
    if scheme in ("redis", "rediss"):
        from .redis import RedisBroker

        return RedisBroker(url, options)
    raise ValueError(f"unsupported broker URL {url!r}: use memory:// or redis://HOST:PORT/DB")


def redact_url(url: str) -> str:
    """``url`` with its credentials masked, for logs and the terminal."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
