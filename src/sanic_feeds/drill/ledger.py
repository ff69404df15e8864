"""The drill's accounting, pure: what each client was promised, given and told.

A client with offsets (``/feed`` JSON, ``/ws``) feeds an :class:`OffsetLedger`
every ``subscribed`` and every message, in the order it saw them. At the end,
given how far each epoch went (:class:`EpochBook`), the ledger says what the
client was owed and did not get:

- A first subscription at offset ``o`` of epoch ``e`` owes everything after
  ``o`` in ``e``, up to the epoch's last offset.
- ``recovered: true`` changes nothing: what was owed is still owed.
- ``recovered: false`` ends what is owed in the old epoch at the last offset
  the client had, and excuses the rest: the old epoch's tail (or, in the same
  epoch, up to the new start) and, when the epoch changed, the new epoch's
  offsets before the new start (``excused_new_epoch``: what a client loses by
  starting "from now" in a new epoch).
- A message of another epoch without a ``subscribed`` saying so owes both the
  old epoch's tail and the new epoch from its first offset: nobody told the
  client about that gap.

Lost (unexplained) is what is owed and never arrived. A duplicate is an
offset delivered again; out-of-order is an offset delivered after a higher
one of its epoch. Every epoch's offsets start at 1 (``brokers/lua/publish.lua``).

A raw client (``?format=raw``) has no offsets: a :class:`RawLedger` counts the
publisher's sequence numbers it got, and its gaps, which the README allows
(raw clients get at-most-once delivery across reconnects).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..events import StreamPosition

__all__ = ["ClientTally", "EpochBook", "OffsetLedger", "RawLedger", "RawTally"]

#: The first offset of every epoch.
FIRST_OFFSET = 1


class EpochBook:
    """How far each epoch of the drill's channel went: the highest offset anyone saw
    (publisher acknowledgements, deliveries, the channel's final position)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def note(self, position: StreamPosition) -> None:
        if position.offset > self._last.get(position.epoch, 0):
            self._last[position.epoch] = position.offset

    def last(self, epoch: str) -> int:
        """The highest offset seen in ``epoch`` (0 when none)."""
        return self._last.get(epoch, 0)

    @property
    def epochs(self) -> int:
        return len(self._last)

    @property
    def offsets(self) -> int:
        """Offsets the broker assigned over every epoch seen."""
        return sum(self._last.values())


@dataclass(frozen=True, slots=True)
class _Span:
    """Offsets ``lo`` to ``hi`` of ``epoch``; ``hi`` None: to the epoch's last offset."""

    epoch: str
    lo: int
    hi: int | None = None

    def offsets(self, book: EpochBook) -> range:
        return range(self.lo, (book.last(self.epoch) if self.hi is None else self.hi) + 1)


@dataclass(frozen=True, slots=True)
class ClientTally:
    """One client's figures (or several clients' summed, see :meth:`add`)."""

    clients: int = 1
    delivered: int = 0
    #: Owed and never delivered, with no ``recovered: false`` to say so.
    lost: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    #: ``subscribed`` with ``recovered: false`` after the first subscription.
    recovered_false: int = 0
    #: Not delivered, and excused by a ``recovered: false``.
    excused: int = 0
    #: Of ``excused``: offsets of the new epoch before the client's new start.
    excused_new_epoch: int = 0
    #: Epoch changes no ``subscribed`` announced (messages of another epoch).
    unannounced_epochs: int = 0
    #: Messages before any ``subscribed``, ``recovered: true`` in another epoch.
    protocol_errors: int = 0
    #: Longest publish-to-delivery time of a delivery before / from the fault on.
    max_delay_before_s: float = 0.0
    max_delay_after_s: float = 0.0
    #: The most offsets one ``recovered: false`` in the same epoch jumped over: how
    #: far behind the client was when it resubscribed (the history it needed).
    max_skipped: int = 0
    #: Seconds from the fault to the first and the last ``recovered: false``.
    recovered_false_from_s: float | None = None
    recovered_false_until_s: float | None = None

    def add(self, other: ClientTally) -> ClientTally:
        return ClientTally(
            clients=self.clients + other.clients,
            delivered=self.delivered + other.delivered,
            lost=self.lost + other.lost,
            duplicates=self.duplicates + other.duplicates,
            out_of_order=self.out_of_order + other.out_of_order,
            recovered_false=self.recovered_false + other.recovered_false,
            excused=self.excused + other.excused,
            excused_new_epoch=self.excused_new_epoch + other.excused_new_epoch,
            unannounced_epochs=self.unannounced_epochs + other.unannounced_epochs,
            protocol_errors=self.protocol_errors + other.protocol_errors,
            max_delay_before_s=max(self.max_delay_before_s, other.max_delay_before_s),
            max_delay_after_s=max(self.max_delay_after_s, other.max_delay_after_s),
            max_skipped=max(self.max_skipped, other.max_skipped),
            recovered_false_from_s=_least(
                self.recovered_false_from_s, other.recovered_false_from_s
            ),
            recovered_false_until_s=_most(
                self.recovered_false_until_s, other.recovered_false_until_s
            ),
        )

    @staticmethod
    def total(tallies: Iterable[ClientTally]) -> ClientTally:
        result = ClientTally(clients=0)
        for tally in tallies:
            result = result.add(tally)
        return result

    @property
    def broken(self) -> bool:
        """The guarantee failed: a loss nobody was told of, a duplicate, a reordering."""
        return bool(self.lost or self.duplicates or self.out_of_order)


def _least(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _most(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


class _Delays:
    """The longest delay before and from the fault on; ``fault_at`` is set when it happens."""

    __slots__ = ("after_s", "before_s", "fault_at")

    def __init__(self) -> None:
        self.fault_at: float | None = None
        self.before_s = 0.0
        self.after_s = 0.0

    def note(self, sent_at: float | None, received_at: float) -> None:
        if sent_at is None:
            return
        delay_s = received_at - sent_at
        if self.fault_at is not None and received_at >= self.fault_at:
            self.after_s = max(self.after_s, delay_s)
        else:
            self.before_s = max(self.before_s, delay_s)


class OffsetLedger:
    """What one client with offsets was told and given, in order (see the module's doc).

    ``fault_at`` (a time on the clock of ``received_at``) splits the delays; the
    runner sets it on every ledger when it injects the fault.
    """

    def __init__(self) -> None:
        self._delays = _Delays()
        #: The client's position: the first subscription's, then the highest
        #: offset delivered in the current epoch (or a recovered: false's start).
        self._position: StreamPosition | None = None
        self._current: _Span | None = None
        self._owed: list[_Span] = []
        self._excused: list[_Span] = []
        self._new_epoch: list[_Span] = []
        self._seen: dict[str, set[int]] = {}
        self._highest: dict[str, int] = {}
        self._delivered = 0
        self._duplicates = 0
        self._out_of_order = 0
        self._recovered_false = 0
        self._max_skipped = 0
        #: When each recovered: false came, in seconds from the fault (when both known).
        self._recovered_false_at: list[float] = []
        self._unannounced = 0
        self._protocol_errors = 0

    @property
    def fault_at(self) -> float | None:
        return self._delays.fault_at

    @fault_at.setter
    def fault_at(self, at: float | None) -> None:
        self._delays.fault_at = at

    @property
    def position(self) -> StreamPosition | None:
        """Where the client stands (what a recovering client sends as ``since``)."""
        return self._position

    def subscribed(
        self, position: StreamPosition, recovered: bool, received_at: float | None = None
    ) -> None:
        """A ``subscribed`` event: the first one, or a resubscription's answer
        (``received_at``: when, on the clock of :attr:`fault_at`)."""
        held = self._position
        if held is None:
            self._start(position)
        elif recovered:
            if position.epoch != held.epoch:
                # Recovered from an epoch it never asked for: a promise that cannot hold.
                self._protocol_errors += 1
                self._switch_epoch(position.epoch)
        else:
            self._recovered_false += 1
            fault_at = self._delays.fault_at
            if received_at is not None and fault_at is not None:
                self._recovered_false_at.append(received_at - fault_at)
            if position.epoch == held.epoch:
                self._max_skipped = max(self._max_skipped, position.offset - held.offset)
            assert self._current is not None
            self._owed.append(_Span(self._current.epoch, self._current.lo, held.offset))
            if position.epoch == held.epoch:
                if position.offset > held.offset:
                    self._excused.append(_Span(held.epoch, held.offset + 1, position.offset))
            else:
                self._excused.append(_Span(held.epoch, held.offset + 1))
                if position.offset >= FIRST_OFFSET:
                    span = _Span(position.epoch, FIRST_OFFSET, position.offset)
                    self._excused.append(span)
                    self._new_epoch.append(span)
            self._start(position)

    def message(self, position: StreamPosition, sent_at: float | None, received_at: float) -> None:
        """A message at ``position``, published at ``sent_at`` (None: unknown), received at
        ``received_at`` (same clock)."""
        self._delivered += 1
        self._delays.note(sent_at, received_at)
        held = self._position
        if held is None:
            self._protocol_errors += 1
            return
        if position.epoch != held.epoch:
            self._unannounced += 1
            self._switch_epoch(position.epoch)
            held = self._position
            assert held is not None
        if position.offset > held.offset:
            self._position = position
        seen = self._seen.setdefault(position.epoch, set())
        if position.offset in seen:
            self._duplicates += 1
            return
        seen.add(position.offset)
        if position.offset < self._highest.get(position.epoch, 0):
            self._out_of_order += 1
        else:
            self._highest[position.epoch] = position.offset

    def _start(self, position: StreamPosition) -> None:
        self._position = position
        self._current = _Span(position.epoch, position.offset + 1)

    def _switch_epoch(self, epoch: str) -> None:
        """The client is in ``epoch`` now, without having been told what it missed."""
        assert self._current is not None
        self._owed.append(self._current)  # the old epoch's tail stays owed
        self._position = StreamPosition(FIRST_OFFSET - 1, epoch)
        self._current = _Span(epoch, FIRST_OFFSET)

    def tally(self, book: EpochBook) -> ClientTally:
        """The client's figures, given how far each epoch went."""
        spans = [*self._owed, *([self._current] if self._current is not None else [])]
        owed = _offsets(spans, book)
        lost = sum(len(offsets - self._seen.get(epoch, set())) for epoch, offsets in owed.items())

        def not_delivered(excused: list[_Span]) -> int:
            return sum(
                len(offsets - self._seen.get(epoch, set()) - owed.get(epoch, set()))
                for epoch, offsets in _offsets(excused, book).items()
            )

        return ClientTally(
            delivered=self._delivered,
            lost=lost,
            duplicates=self._duplicates,
            out_of_order=self._out_of_order,
            recovered_false=self._recovered_false,
            excused=not_delivered(self._excused),
            excused_new_epoch=not_delivered(self._new_epoch),
            unannounced_epochs=self._unannounced,
            protocol_errors=self._protocol_errors,
            max_delay_before_s=self._delays.before_s,
            max_delay_after_s=self._delays.after_s,
            max_skipped=self._max_skipped,
            recovered_false_from_s=min(self._recovered_false_at, default=None),
            recovered_false_until_s=max(self._recovered_false_at, default=None),
        )


def _offsets(spans: Iterable[_Span], book: EpochBook) -> dict[str, set[int]]:
    by_epoch: dict[str, set[int]] = {}
    for span in spans:
        by_epoch.setdefault(span.epoch, set()).update(span.offsets(book))
    return by_epoch


@dataclass(frozen=True, slots=True)
class RawTally:
    """Raw clients' figures: informative, not held to the guarantee."""

    clients: int = 1
    delivered: int = 0
    #: Publications acknowledged while the client was there and never delivered to it.
    missed: int = 0
    #: The same publication (by the publisher's sequence number) twice.
    repeated: int = 0
    max_delay_after_s: float = 0.0

    def add(self, other: RawTally) -> RawTally:
        return RawTally(
            clients=self.clients + other.clients,
            delivered=self.delivered + other.delivered,
            missed=self.missed + other.missed,
            repeated=self.repeated + other.repeated,
            max_delay_after_s=max(self.max_delay_after_s, other.max_delay_after_s),
        )

    @staticmethod
    def total(tallies: Iterable[RawTally]) -> RawTally:
        result = RawTally(clients=0)
        for tally in tallies:
            result = result.add(tally)
        return result


class RawLedger:
    """What one raw client got, by the publisher's sequence numbers (``seq``)."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._delivered = 0
        self._repeated = 0
        self._delays = _Delays()

    @property
    def fault_at(self) -> float | None:
        return self._delays.fault_at

    @fault_at.setter
    def fault_at(self, at: float | None) -> None:
        self._delays.fault_at = at

    def message(self, seq: int, sent_at: float | None, received_at: float) -> None:
        self._delivered += 1
        self._delays.note(sent_at, received_at)
        if seq in self._seen:
            self._repeated += 1
        self._seen.add(seq)

    def tally(self, acknowledged: Mapping[int, object]) -> RawTally:
        """``acknowledged``: the sequence numbers the broker accepted (the client
        connected before the first publish, so it was there for all of them)."""
        return RawTally(
            delivered=self._delivered,
            missed=sum(1 for seq in acknowledged if seq not in self._seen),
            repeated=self._repeated,
            max_delay_after_s=self._delays.after_s,
        )
