"""Merging history with live publications: pure logic, no I/O."""

from __future__ import annotations

from collections.abc import Iterable

from .events import Publication

__all__ = ["contiguous_after"]


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
