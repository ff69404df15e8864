"""sanic-feeds: a horizontally scalable WebSocket feed server, as a Sanic extension.

The names below load on first use, so that a process that only publishes
(``from sanic_feeds import Publisher``) or only subscribes (``FeedsClient``)
never imports Sanic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "BadRequest",
    "Broker",
    "BrokerUnavailable",
    "ClientView",
    "CloseCode",
    "ErrorCode",
    "Feeds",
    "FeedsClient",
    "FeedsError",
    "Forbidden",
    "HookFailed",
    "Identity",
    "Join",
    "Leave",
    "Publication",
    "PublishBufferFull",
    "Publisher",
    "RateLimited",
    "Settings",
    "StreamPosition",
    "Subscribed",
    "SubscriptionRefused",
    "Unauthorized",
    "create_broker",
    "load_settings",
]

__version__ = "0.1.0"

#: Where each exported name lives, relative to this package.
_SOURCES = {
    "Broker": ".brokers",
    "create_broker": ".brokers",
    "BrokerUnavailable": ".errors",
    "CloseCode": ".errors",
    "ErrorCode": ".errors",
    "FeedsError": ".errors",
    "BadRequest": ".errors",
    "Forbidden": ".errors",
    "HookFailed": ".errors",
    "RateLimited": ".errors",
    "Unauthorized": ".errors",
    "ClientView": ".server.hooks",
    "Feeds": ".server.extension",
    "FeedsClient": ".client",
    "Identity": ".auth",
    "Subscribed": ".client",
    "SubscriptionRefused": ".client",
    "Join": ".events",
    "Leave": ".events",
    "Publication": ".events",
    "StreamPosition": ".events",
    "Publisher": ".publisher",
    "PublishBufferFull": ".publisher",
    "Settings": ".settings",
    "load_settings": ".settings",
}

if TYPE_CHECKING:
    from .auth import Identity
    from .brokers import Broker, create_broker
    from .client import FeedsClient, Subscribed, SubscriptionRefused
    from .errors import (
        BadRequest,
        BrokerUnavailable,
        CloseCode,
        ErrorCode,
        FeedsError,
        Forbidden,
        HookFailed,
        RateLimited,
        Unauthorized,
    )
    from .events import Join, Leave, Publication, StreamPosition
    from .publisher import PublishBufferFull, Publisher
    from .server.extension import Feeds
    from .server.hooks import ClientView
    from .settings import Settings, load_settings


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source, __name__), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
