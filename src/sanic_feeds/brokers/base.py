"""The broker interface: what an instance needs from whatever connects instances.

Every broker passes the same contract suite (``tests/integration/test_broker_contract.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..events import Event, Publication, StreamPosition

__all__ = ["Broker", "BrokerHandler", "BrokerOptions", "InstanceStatus"]


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    #: Messages kept per channel for recovery and gap healing.
    history_size: int = 100
    #: A new epoch is kept whole, past ``history_size``, while it holds at most this
    #: many publications (the servers' ``--recovery-max``) and is younger than
    #: ``epoch_start_kept_s`` (``Broker.epoch_start``): when Redis lost a channel, the
    #: publishers' backlog lands the moment it is back, past what history keeps, and
    #: the clients of the lost epoch, back within seconds, are given the new one whole.
    epoch_start_kept: int = 300
    epoch_start_kept_s: float = 30.0
    #: Seconds a channel's history outlives its last publish.
    history_ttl_s: int = 300
    #: Seconds a channel's offset and epoch outlive its last publish (or their
    #: creation by a read, for a channel never published to); while they live,
    #: a quiet channel keeps its epoch and clients keep recovering.
    meta_ttl_s: int = 86_400
    #: Seconds an idempotency key is remembered: a publish retried with the
    #: same key within this time is not published twice.
    idempotency_ttl_s: int = 300
    #: Identifies this instance in presence entries and heartbeats; unique per process
    #: unless given (two brokers sharing an id would expire each other's presence).
    instance_id: str = field(default_factory=lambda: secrets.token_hex(6))
    #: How often this instance proves it is alive (and hears itself back).
    heartbeat_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """What an instance tells the others about itself with each heartbeat
    (``GET /api/info``); its figures are as of that heartbeat."""

    #: The instance's id (``BrokerOptions.instance_id``).
    id: str
    #: Where it serves, as its operator reaches it (``http://HOST:PORT``); "" if unknown.
    address: str = ""
    #: Its process id: the workers of one ``--workers N`` server share an address.
    pid: int = 0
    #: The sanic-feeds version it runs.
    version: str = ""
    #: Seconds since it started.
    uptime: float = 0.0
    #: Open WebSocket connections.
    connections: int = 0
    #: Channel subscriptions of those connections.
    subscriptions: int = 0
    #: Channels it is subscribed to on the broker.
    channels: int = 0


class BrokerHandler(Protocol):
    """What a broker calls back into; implemented by the hub.

    Callbacks run on the event loop and must not block or await.
    """

    def on_event(self, event: Event) -> None:
        """A publication, join or leave arrived on a channel this process subscribed to."""

    def on_resubscribed(self) -> None:
        """The broker lost its subscriptions and has them again.

        Anything published meanwhile was not delivered: the handler must look
        for gaps in every channel (history tells what was missed).
        """

    def on_channels_resubscribed(self, channels: Collection[str]) -> None:
        """These channels lost their subscription and have it again; the others did not
        lose theirs (Redis Cluster: a slot moved to another shard, or one shard failed
        over).

        Anything published on them meanwhile was not delivered: the handler must look
        for gaps in these channels.
        """


class Broker(Protocol):
    """Delivery contract.

    - Publications on one channel reach every subscribed process in offset
      order, which is the order the broker accepted them. Delivery is
      at-most-once: after a connection loss some can be skipped, and the
      handler is told through :meth:`BrokerHandler.on_resubscribed` (every
      channel) or :meth:`BrokerHandler.on_channels_resubscribed` (some); history
      (``history``) is how a gap is filled.
    - Offsets are assigned by the broker at publish time, strictly increasing
      per channel within an epoch. A new epoch means history was lost.
    - A channel's epoch exists from the first time its position is read
      (``position`` or ``history``: a subscription), not only from its first
      publish: a channel without one gets it then, at offset 0, atomically
      with any publish, which keeps it. So a client greeted with offset 0 on
      an empty channel recovers what is published meanwhile. A read never
      answers an empty epoch.
    - ``subscribe`` returns only once every publication accepted after it
      returned will be delivered to this process.
    - Calls that need the broker raise :class:`~sanic_feeds.errors.BrokerUnavailable`
      when it cannot be reached; they never block past a few seconds. Its message may
      hold the broker's own error text: tell clients ``public_message``.
    - ``publish`` refuses, with :class:`~sanic_feeds.errors.BadRequest` and nothing
      published, data that could not be written into every event that carries it
      (``codec.check_data``: not JSON, or nested deeper than ``MAX_DATA_DEPTH``); so
      whatever a broker accepted can be delivered.
    """

    async def start(self, handler: BrokerHandler) -> None:
        """Connect and deliver to ``handler``; raise ``BrokerUnavailable`` if unreachable."""

    async def close(self) -> None:
        """Stop delivering and release every connection. Idempotent."""

    @property
    def ready(self) -> bool:
        """True when this process currently hears what is published (its own heartbeat included)."""

    async def subscribe(self, channel: str) -> None:
        """Start delivering ``channel`` to this process. The caller reference-counts."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel``; other channels are untouched."""

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        client: str | None = None,
        raw: str | None = None,
        idempotency_key: str | None = None,
    ) -> StreamPosition:
        """Append to history and deliver; return the assigned offset and the epoch.

        Raises ``BadRequest`` for ``data`` that ``codec.check_data`` refuses. With an
        ``idempotency_key`` already used on this channel within ``idempotency_ttl_s``,
        publish nothing and return the position that earlier publish got: a retry after
        a lost reply is never a duplicate.

        Calls are taken in the order they are made: a call is committed to its place
        (queued, or done) before its first suspension, so that the publishes one
        connection starts one after the other (``server/publishing.py``) keep their order.
        """

    async def publish_event(self, event: Event) -> None:
        """Deliver a join or leave (not kept in history, no offset)."""

    async def position(self, channel: str) -> StreamPosition:
        """The last offset and the epoch of ``channel``; a channel without an epoch (never
        used, expired, or its history lost) gets a new one now, at offset 0."""

    async def peek_position(self, channel: str) -> StreamPosition | None:
        """The last offset and the epoch of ``channel``, or None when it has no epoch.
        Writes nothing: for reads that anyone may make as often as they like."""

    async def history(
        self, channel: str, since: int | None, limit: int, *, epoch: str | None = None
    ) -> tuple[list[Publication], StreamPosition]:
        """Up to ``limit`` publications after offset ``since`` (oldest first), or the newest
        ``limit`` when ``since`` is None, and the channel's position when read (created as
        ``position`` creates it).

        ``epoch`` (with ``since``): the epoch ``since`` belongs to. When the channel's
        epoch is another one, the publications are instead the oldest ``limit`` that
        history holds of the channel's epoch (from offset 1 unless trimmed), read in the
        same atomic step that tells the epoch changed: a new epoch's start, read before
        history trims it."""

    async def epoch_start(
        self, channel: str, epoch: str, since: int, limit: int
    ) -> list[Publication]:
        """Up to ``limit`` publications of ``epoch`` after offset ``since`` (oldest first)
        that history no longer holds, from the epoch's start, which the broker keeps
        while the epoch is new: during its first ``BrokerOptions.epoch_start_kept_s`` and
        until it passes offset ``epoch_start_kept`` (none with ``history_size`` 0).
        Meanwhile these and history hold the epoch whole. Empty when ``epoch`` is not
        the channel's epoch, or no longer new. History itself keeps ``history_size``: a
        recovery within an epoch still needs history to hold what it replays.
        """

    async def supersede(self, channel: str, old_epoch: str, new_epoch: str) -> None:
        """Record that ``new_epoch`` replaced ``old_epoch`` on ``channel`` (the history of
        ``old_epoch`` was lost and this instance saw it happen), for ``history_ttl_s``:
        while the record lives, a client that saw ``old_epoch`` may be given ``new_epoch``
        from its first offset. A later record for the same ``old_epoch`` replaces it.
        Written next to the channel's other state (in its Redis Cluster slot)."""

    async def successor(self, channel: str, epoch: str) -> str | None:
        """The epoch recorded (:meth:`supersede`) as having replaced ``epoch`` on
        ``channel``, or None (never recorded, expired, or lost with the broker's data).
        Writes nothing."""

    async def add_presence(self, channel: str, client: str, info: Any) -> None:
        """Record ``client`` as present on ``channel`` until removed or this instance dies."""

    async def remove_presence(self, channel: str, client: str) -> None: ...

    async def presence(self, channel: str) -> dict[str, Any]:
        """``{client id: info}`` of every live client on ``channel``, across all instances."""

    def set_status(self, source: Callable[[], InstanceStatus]) -> None:
        """Tell the other instances about this one: from now on, each heartbeat carries
        what ``source()`` returns (called on the event loop; it must not block)."""

    async def instances(self) -> list[InstanceStatus]:
        """The status of every live instance sharing this broker, this one included once
        it has a status source and has sent a heartbeat, sorted by address then id. An
        instance is live while its heartbeat is heard (presence's expiry, five heartbeat
        intervals); a closed one is gone at once. Never writes to the broker."""
