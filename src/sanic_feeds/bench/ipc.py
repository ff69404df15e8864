"""What the parent and the load-generator processes tell each other.

Each worker process has one duplex :func:`multiprocessing.Pipe`. The parent
sends :class:`Go`, :class:`Drain` and :class:`Stop` (only :class:`Stop` when
nothing is published); the worker answers, in this order, one
:class:`Connected`, :class:`Progress` every half second, one
:class:`Published` (after :class:`Go`), one :class:`WorkerResult` (after
:class:`Stop`), or a :class:`Failed` at any point, after which it exits.

Besides the pipes, :class:`ProgressSlots` is shared memory through which
``--rate max`` publishers see how far the slowest subscriber of their
channel has got, in every process, without a round trip through the parent.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass, field

from .stats import ChannelTally, LatencyHistogram

__all__ = [
    "ChurnTally",
    "Connected",
    "Drain",
    "Failed",
    "Go",
    "Progress",
    "ProgressSlots",
    "Published",
    "Stop",
    "WorkerMessage",
    "WorkerResult",
]

# -- parent to worker


@dataclass(frozen=True, slots=True)
class Go:
    """Every connection of every process is subscribed: start publishing."""


@dataclass(frozen=True, slots=True)
class Drain:
    """Every publisher of every process is done: stop churning, keep reading."""


@dataclass(frozen=True, slots=True)
class Stop:
    """The drain period is over: report and disconnect.

    ``published`` (messages per channel index, over all processes) lets the
    worker count only sequence numbers that were really published.
    """

    published: Mapping[int, int]


# -- worker to parent


@dataclass(frozen=True, slots=True)
class Connected:
    """The worker's connections have all opened, or failed to."""

    worker: int
    connected: int
    failed: int
    #: What went wrong with the first connection that failed.
    first_error: str | None
    #: Wall clock (``time.time_ns``) when the first handshake began and the last ended.
    started_ns: int
    finished_ns: int


@dataclass(frozen=True, slots=True)
class Progress:
    worker: int
    connected: int
    #: First deliveries to staying subscribers so far.
    delivered: int
    published: int
    #: Connections the server closed so far.
    closed: int


@dataclass(frozen=True, slots=True)
class Published:
    """The worker's publishers are done."""

    worker: int
    #: Messages published, by channel index.
    counts: Mapping[int, int]
    #: Wall clock of the first publish and of the end of the last (None: no publisher).
    started_ns: int | None
    finished_ns: int | None


@dataclass(slots=True)
class ChurnTally:
    """What churning connections (those that come and go) saw."""

    connects: int = 0
    failures: int = 0
    first_failure: str | None = None
    disconnects: int = 0
    #: Connections the server closed before their lifetime was over.
    closed_by_server: int = 0
    delivered: int = 0
    duplicates: int = 0
    misrouted: int = 0
    #: Time from starting the handshake to receiving ``subscribed``.
    connect_latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def add(self, other: ChurnTally) -> None:
        self.connects += other.connects
        self.failures += other.failures
        self.first_failure = self.first_failure or other.first_failure
        self.disconnects += other.disconnects
        self.closed_by_server += other.closed_by_server
        self.delivered += other.delivered
        self.duplicates += other.duplicates
        self.misrouted += other.misrouted
        self.connect_latency.merge(other.connect_latency)


@dataclass(frozen=True, slots=True)
class WorkerResult:
    worker: int
    #: Latency of every first delivery (staying and churning subscribers).
    latency: LatencyHistogram
    #: Staying subscribers' ledgers summed by channel index.
    tallies: Mapping[int, ChannelTally]
    churn: ChurnTally
    #: Connections the server closed during the run, by close code.
    closed_by_server: Mapping[int, int]
    #: ``error`` events received, by error code.
    error_events: Mapping[str, int]
    #: ``join`` and ``leave`` events received (ignored otherwise).
    presence_events: int
    #: Wall clock of the first and last delivery (0: none).
    first_delivery_ns: int
    last_delivery_ns: int


@dataclass(frozen=True, slots=True)
class Failed:
    """The worker cannot go on; ``message`` is for the user."""

    worker: int
    message: str


WorkerMessage = Connected | Progress | Published | WorkerResult | Failed


class ProgressSlots:
    """One int64 per (process, channel): the sequence number the slowest live
    subscriber of that channel in that process waits for next.

    Written only by its own process, read by publishers in any process; a
    single aligned 64-bit store is atomic on the platforms we run on, and a
    stale read only makes a publisher wait a little longer.
    """

    #: Value of a slot with no live subscriber behind it: never holds anyone back.
    NOBODY = 1 << 62

    __slots__ = ("_array", "_channels", "_procs")

    def __init__(self, array: ctypes.Array[ctypes.c_int64], procs: int, channels: int) -> None:
        if len(array) != procs * channels:
            raise ValueError("the shared array does not match procs x channels")
        self._array = array
        self._procs = procs
        self._channels = channels

    @staticmethod
    def size(procs: int, channels: int) -> int:
        return procs * channels

    def clear(self) -> None:
        for index in range(len(self._array)):
            self._array[index] = self.NOBODY

    def set(self, worker: int, channel: int, next_seq: int) -> None:
        self._array[worker * self._channels + channel] = next_seq

    def floor(self, channel: int) -> int:
        """The lowest progress over all processes on ``channel``."""
        array, stride = self._array, self._channels
        return min(array[worker * stride + channel] for worker in range(self._procs))
