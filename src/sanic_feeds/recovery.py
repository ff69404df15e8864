"""Merging history with live publications: pure logic, no I/O."""

from __future__ import annotations

from collections.abc import Iterable

from .events import Publication, StreamPosition

__all__ = ["contiguous_after", "replay_start"]


def contiguous_after(
    last_offset: int, *sources: Iterable[Publication]
) -> tuple[list[Publication], list[Publication]]:
    """Order publications from several sources and split off what can be delivered.

    Returns ``(ready, waiting)``: ``ready`` holds each offset after
    ``last_offset`` exactly once, in order, without a gap; ``waiting`` holds
    the rest (after a gap), also deduplicated and ordered. Publications at or
    before ``last_offset`` are dropped as already delivered.
    """
    by_offset: dict[int, Publication] = {}
    for source in sources:
        for pub in source:
            if pub.offset > last_offset:
                by_offset.setdefault(pub.offset, pub)
    ordered = sorted(by_offset.values(), key=lambda pub: pub.offset)
    expected = last_offset + 1
    for index, pub in enumerate(ordered):
        if pub.offset != expected:
            return ordered[:index], ordered[index:]
        expected += 1
    return ordered, []


def replay_start(
    since: StreamPosition, epoch: str, successor: str | None
) -> tuple[StreamPosition, bool] | None:
    """Where to replay from for a client that saw ``since``, on a channel in ``epoch``,
    and whether that replay is a recovery (``recovered: true``); None: nothing can be
    replayed, the client starts from now (``recovered: false``).

    ``successor`` is the epoch recorded as having replaced ``since.epoch`` on the
    channel (``Broker.successor``), None when there is no such record.

    - ``since`` in ``epoch``: from ``since``, a recovery.
    - ``since`` in the epoch that ``epoch`` replaced: from the start of ``epoch``
      (offset 0), not a recovery: the old epoch's tail is gone, but the new epoch
      can be given whole.
    - anything else (an epoch the channel never had, one replaced by another epoch
      since, or no record): None.

    The caller still needs history to hold every offset after the start, and at most
    ``--recovery-max`` of them: a replay is never partial.
    """
    if not epoch:
        return None
    if since.epoch == epoch:
        return since, True
    if successor == epoch:
        return StreamPosition(0, epoch), False
    return None
