"""sanic-feeds: a horizontally scalable WebSocket feed server, as a Sanic extension."""

from __future__ import annotations

from .errors import BrokerUnavailable, CloseCode, ErrorCode, FeedsError
from .extension import Feeds
from .protocol import Publication, StreamPosition
from .publisher import PublishBufferFull, Publisher
from .settings import Settings

__all__ = [
    "BrokerUnavailable",
    "CloseCode",
    "ErrorCode",
    "Feeds",
    "FeedsError",
    "Publication",
    "PublishBufferFull",
    "Publisher",
    "Settings",
    "StreamPosition",
]

__version__ = "0.1.0"
