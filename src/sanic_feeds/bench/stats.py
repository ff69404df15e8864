"""Pure accounting of a run: latency histograms, per-subscriber delivery
ledgers (loss, duplicates, misrouting, reordering), and their merging.

Nothing here does I/O or knows about processes: values in, values out. The
worker processes fill these structures, pickle them to the parent, and the
parent merges them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "BUCKETS_PER_DECADE",
    "ChannelTally",
    "LatencyHistogram",
    "Ledger",
    "Outcome",
    "count_lost",
    "median",
    "merge_tallies",
]

#: Resolution of :class:`LatencyHistogram`: 100 buckets per factor of 10,
#: so any percentile is within 2.3 % of the true value.
BUCKETS_PER_DECADE = 100
#: Smallest latency with a bucket of its own (1 µs); faster ones share bucket 0.
_FLOOR_NS = 1_000
#: Decades covered above the floor: 1 µs to 1000 s; slower ones share the last bucket.
_DECADES = 9
_BUCKETS = _DECADES * BUCKETS_PER_DECADE + 2


def _bucket_of(latency_ns: int) -> int:
    if latency_ns < _FLOOR_NS:
        return 0
    index = int(math.log10(latency_ns / _FLOOR_NS) * BUCKETS_PER_DECADE) + 1
    return index if index < _BUCKETS else _BUCKETS - 1


def _bucket_bounds_ns(index: int) -> tuple[float, float]:
    """``[low, high)`` of bucket ``index`` in nanoseconds."""
    if index == 0:
        return 0.0, float(_FLOOR_NS)
    low = _FLOOR_NS * 10 ** ((index - 1) / BUCKETS_PER_DECADE)
    high = _FLOOR_NS * 10 ** (index / BUCKETS_PER_DECADE)
    return low, high


@dataclass(slots=True)
class LatencyHistogram:
    """Counts of latencies in fixed log-spaced buckets, mergeable by addition.

    Fixed buckets keep memory constant (about 900 integers) however many
    samples a run records, and two histograms from different processes merge
    exactly. Minimum, maximum and sum are kept exactly; percentiles are the
    geometric middle of their bucket, clamped to ``[min, max]``.
    Negative latencies (clock steps) count as 0.
    """

    #: ``counts[i]``: samples in bucket ``i`` (see :func:`_bucket_bounds_ns`).
    counts: list[int] = field(default_factory=lambda: [0] * _BUCKETS)
    #: Number of samples recorded.
    count: int = 0
    #: Sum of all samples in nanoseconds, for the mean.
    total_ns: int = 0
    #: Smallest and largest sample in nanoseconds (0 while empty).
    min_ns: int = 0
    max_ns: int = 0

    def record(self, latency_ns: int) -> None:
        if latency_ns < 0:
            latency_ns = 0
        self.counts[_bucket_of(latency_ns)] += 1
        if self.count == 0 or latency_ns < self.min_ns:
            self.min_ns = latency_ns
        if latency_ns > self.max_ns:
            self.max_ns = latency_ns
        self.count += 1
        self.total_ns += latency_ns

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s samples to this histogram."""
        if other.count == 0:
            return
        for index, value in enumerate(other.counts):
            if value:
                self.counts[index] += value
        if self.count == 0 or other.min_ns < self.min_ns:
            self.min_ns = other.min_ns
        self.max_ns = max(self.max_ns, other.max_ns)
        self.count += other.count
        self.total_ns += other.total_ns

    def percentile_ns(self, fraction: float) -> float | None:
        """The latency below which ``fraction`` (0 to 1) of samples fall; None if empty."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
        if self.count == 0:
            return None
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index, value in enumerate(self.counts):
            seen += value
            if seen >= rank:
                low, high = _bucket_bounds_ns(index)
                middle = math.sqrt(low * high) if low > 0 else high / 2
                return min(max(middle, float(self.min_ns)), float(self.max_ns))
        return float(self.max_ns)  # pragma: no cover - counts always sum to count

    def percentile_ms(self, fraction: float) -> float | None:
        value = self.percentile_ns(fraction)
        return None if value is None else value / 1e6

    @property
    def max_ms(self) -> float | None:
        return None if self.count == 0 else self.max_ns / 1e6

    @property
    def mean_ms(self) -> float | None:
        return None if self.count == 0 else self.total_ns / self.count / 1e6

    def buckets_ms(self) -> Iterator[tuple[float, float, int]]:
        """``(low_ms, high_ms, count)`` of every non-empty bucket, fastest first."""
        for index, value in enumerate(self.counts):
            if value:
                low, high = _bucket_bounds_ns(index)
                yield low / 1e6, high / 1e6, value

    def span_ms(self) -> tuple[list[float], list[int]]:
        """``(edges, counts)`` from the first to the last non-empty bucket, empty
        ones included: ``len(edges) == len(counts) + 1`` (for a step plot)."""
        used = [index for index, value in enumerate(self.counts) if value]
        if not used:
            return [], []
        first, last = used[0], used[-1]
        edges = [_bucket_bounds_ns(index)[0] / 1e6 for index in range(first, last + 1)]
        edges.append(_bucket_bounds_ns(last)[1] / 1e6)
        return edges, self.counts[first : last + 1]


class Outcome(Enum):
    """What one received message was, for the subscriber that got it."""

    NEW = "new"
    DUPLICATE = "duplicate"
    MISROUTED = "misrouted"
    FOREIGN = "foreign"


class Ledger:
    """What one subscriber received on its channel, by publish sequence number.

    Sequence numbers are dense from 0 (one publisher per channel), so a bit
    per number (a growable ``bytearray``) tells duplicates from new messages
    at 1/8 byte per message, where a ``set`` would cost about 60 bytes.
    """

    __slots__ = (
        "_seen",
        "channel",
        "distinct",
        "duplicates",
        "foreign",
        "misrouted",
        "next_seq",
        "reordered",
    )

    def __init__(self, channel: str) -> None:
        #: The channel this subscriber subscribed to.
        self.channel = channel
        #: Bit ``n`` set: sequence number ``n`` was received.
        self._seen = bytearray(64)
        #: Messages of this channel received at least once.
        self.distinct = 0
        #: Messages of this channel received again (each extra copy counts).
        self.duplicates = 0
        #: Messages that belong to another channel (by payload or envelope).
        self.misrouted = 0
        #: New messages with a sequence number below one already received.
        self.reordered = 0
        #: Messages without a bench payload (published by someone else).
        self.foreign = 0
        #: One past the highest sequence number received: the subscriber's
        #: progress, which ``--rate max`` publishers pace themselves on.
        self.next_seq = 0

    def record(self, seq: object, payload_channel: object, envelope_channel: object) -> Outcome:
        """Account one received ``message`` event and say what it was."""
        if payload_channel != self.channel or envelope_channel != self.channel:
            self.misrouted += 1
            return Outcome.MISROUTED
        if type(seq) is not int or seq < 0:
            self.foreign += 1
            return Outcome.FOREIGN
        byte, bit = seq >> 3, 1 << (seq & 7)
        seen = self._seen
        if byte >= len(seen):
            seen.extend(bytes(max(byte + 1, 2 * len(seen)) - len(seen)))
        if seen[byte] & bit:
            self.duplicates += 1
            return Outcome.DUPLICATE
        seen[byte] |= bit
        self.distinct += 1
        if seq < self.next_seq:
            self.reordered += 1
        else:
            self.next_seq = seq + 1
        return Outcome.NEW

    def distinct_below(self, limit: int) -> int:
        """How many distinct sequence numbers in ``[0, limit)`` were received."""
        whole, rest = divmod(max(0, limit), 8)
        seen = self._seen
        total = int.from_bytes(seen[:whole], "little").bit_count()
        if rest and whole < len(seen):
            total += (seen[whole] & ((1 << rest) - 1)).bit_count()
        return total


@dataclass(slots=True)
class ChannelTally:
    """The ledgers of one channel's subscribers in one process, summed."""

    #: Subscribers counted (those that stayed the whole run).
    subscribers: int = 0
    #: Sum over subscribers of distinct messages received.
    distinct: int = 0
    duplicates: int = 0
    misrouted: int = 0
    reordered: int = 0
    foreign: int = 0

    def add_ledger(self, ledger: Ledger) -> None:
        self.subscribers += 1
        self.distinct += ledger.distinct
        self.duplicates += ledger.duplicates
        self.misrouted += ledger.misrouted
        self.reordered += ledger.reordered
        self.foreign += ledger.foreign

    def add(self, other: ChannelTally) -> None:
        self.subscribers += other.subscribers
        self.distinct += other.distinct
        self.duplicates += other.duplicates
        self.misrouted += other.misrouted
        self.reordered += other.reordered
        self.foreign += other.foreign


def merge_tallies(parts: Iterable[Mapping[int, ChannelTally]]) -> dict[int, ChannelTally]:
    """Merge per-process tallies keyed by channel index into one per channel."""
    merged: dict[int, ChannelTally] = {}
    for part in parts:
        for channel, tally in part.items():
            merged.setdefault(channel, ChannelTally()).add(tally)
    return merged


def count_lost(published: Mapping[int, int], tallies: Mapping[int, ChannelTally]) -> int:
    """Messages a counted subscriber never received: for each channel,
    subscribers x published minus what they received (never negative)."""
    lost = 0
    for channel, tally in tallies.items():
        expected = tally.subscribers * published.get(channel, 0)
        lost += max(0, expected - tally.distinct)
    return lost


def median(values: Iterable[float | None]) -> float | None:
    """Median of the known values; None when there is none."""
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None
