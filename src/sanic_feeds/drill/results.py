"""One drill's result, from its clients' tallies: pure values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .ledger import ClientTally, RawTally

__all__ = ["DrillResult"]


@dataclass(frozen=True, slots=True)
class DrillResult:
    """What one run of one drill did, and what its clients got.

    ``offset_clients`` are the clients held to the guarantee (JSON ``/feed``,
    ``/ws``, slow), by kind; ``raw`` the raw ``/feed`` clients, whose gaps
    the README allows.
    """

    drill: str
    run: int
    #: Why the drill did not run (it needs a Redis of its own), or None.
    skipped: str | None = None
    #: Publications the broker acknowledged (each counted once).
    published: int = 0
    #: Publications given up after their retries.
    publish_failed: int = 0
    #: Publications that needed more than one attempt.
    publish_retried: int = 0
    #: Offsets the broker assigned, over every epoch (more than ``published``
    #: when one was published twice, or unacknowledged).
    offsets: int = 0
    epochs: int = 0
    offset_clients: Mapping[str, ClientTally] = field(default_factory=dict)
    raw: RawTally = field(default_factory=lambda: RawTally(clients=0))
    #: ``/ready`` changes of any instance during the drill.
    ready_transitions: int = 0
    #: Each change: seconds from the fault, instance, ready.
    ready_events: tuple[tuple[float, int, bool], ...] = ()
    #: Connection endings by close code (``refused``: it did not open), every kind.
    closes: Mapping[str, int] = field(default_factory=dict)
    #: Seconds of publishing, and when the fault came and ended (from the first publish).
    publishing_s: float = 0.0
    fault_at_s: float = 0.0
    recovered_at_s: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def guarantee(self) -> ClientTally:
        """Every client with offsets, summed."""
        return ClientTally.total(self.offset_clients.values())

    @property
    def broken(self) -> bool:
        """A client with offsets lost a message unexplained, got one twice or out of order."""
        return self.guarantee.broken

    def to_json(self) -> dict[str, Any]:
        guarantee = self.guarantee
        return {
            "drill": self.drill,
            "run": self.run,
            "skipped": self.skipped,
            "published": self.published,
            "publish_failed": self.publish_failed,
            "publish_retried": self.publish_retried,
            "offsets": self.offsets,
            "epochs": self.epochs,
            "delivered": guarantee.delivered,
            "lost": guarantee.lost,
            "duplicates": guarantee.duplicates,
            "out_of_order": guarantee.out_of_order,
            "recovered_false": guarantee.recovered_false,
            "excused": guarantee.excused,
            "excused_new_epoch": guarantee.excused_new_epoch,
            "unannounced_epochs": guarantee.unannounced_epochs,
            "protocol_errors": guarantee.protocol_errors,
            "max_delay_after_fault_s": round(guarantee.max_delay_after_s, 3),
            "max_delay_before_fault_s": round(guarantee.max_delay_before_s, 3),
            "max_skipped": guarantee.max_skipped,
            "recovered_false_from_s": _rounded(guarantee.recovered_false_from_s),
            "recovered_false_until_s": _rounded(guarantee.recovered_false_until_s),
            "ready_transitions": self.ready_transitions,
            "ready_events": [
                {"at_s": round(at, 2), "instance": instance, "ready": ready}
                for at, instance, ready in self.ready_events
            ],
            "by_kind": {kind: asdict(tally) for kind, tally in self.offset_clients.items()},
            "raw": asdict(self.raw),
            "closes": dict(self.closes),
            "publishing_s": round(self.publishing_s, 2),
            "fault_at_s": round(self.fault_at_s, 2),
            "recovered_at_s": _rounded(self.recovered_at_s),
            "broken": self.broken,
            "notes": list(self.notes),
        }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)
