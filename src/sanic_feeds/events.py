"""The domain's values: positions in a channel's history, publications, joins and leaves.

Frozen dataclasses with no I/O and no wire format: the client codec (``codec.py``) and the
Redis envelope (``brokers/envelope.py``) each turn them into bytes their own way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Event", "Join", "Leave", "Publication", "StreamPosition", "now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a channel's history stands: the last ``offset`` in ``epoch``.

    Offsets are assigned by the broker, strictly increasing per channel
    within one epoch; a new epoch means the history before it was lost
    (docs/protocol.md, "Offsets, epochs, history and recovery").
    """

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Publication:
    """One published message, as every instance sees it."""

    channel: str
    offset: int
    epoch: str
    #: The message as a JSON value.
    data: Any
    #: Sender's client id, ``None`` for the HTTP API and backend publishers.
    client: str | None = None
    ts_ms: int = field(default_factory=now_ms)
    #: The exact text a raw client receives, when it is not derivable from
    #: ``data`` (a client frame that was JSON but written with other spacing).
    raw: str | None = None

    @property
    def raw_text(self) -> str:
        """What a ``format=raw`` client receives: the published text exactly."""
        if self.raw is not None:
            return self.raw
        if isinstance(self.data, str):
            return self.data
        return orjson.dumps(self.data).decode()


@dataclass(frozen=True, slots=True)
class Join:
    """``client`` subscribed to ``channel``; ``info`` is what presence shows of it."""

    channel: str
    client: str
    info: Any = None


@dataclass(frozen=True, slots=True)
class Leave:
    """``client`` left ``channel``."""

    channel: str
    client: str


Event = Publication | Join | Leave
