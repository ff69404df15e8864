"""Redis Cluster's slot map, pure: which primary serves a name, from ``CLUSTER SHARDS``.

No I/O. A cluster splits names into 16384 slots by the CRC16 of their hash tag
(``{...}``) and gives each slot to one shard, whose primary serves its sharded
pub/sub. :class:`SlotMap` answers "which primary owns this name"; it is a snapshot
that the cluster broker replaces when the server says it is stale.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.crc import key_slot

__all__ = ["SLOTS", "NodeAddress", "SlotMap", "slot_of"]

#: Slots in a Redis Cluster.
SLOTS = 16384
#: Tags tried when looking for one that lands on a given primary; a primary that
#: owns a single slot needs about SLOTS tries on average.
_TAG_TRIES = 64 * SLOTS


def slot_of(name: str | bytes) -> int:
    """The slot of ``name`` (its hash tag's, when it has one)."""
    return key_slot(name.encode() if isinstance(name, str) else name)


@dataclass(frozen=True, slots=True, order=True)
class NodeAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SlotMap:
    """Which primary owns each slot. ``starts``, ``ends`` and ``owners`` describe sorted,
    disjoint ranges (inclusive); a slot in no range is not served (the cluster is
    incomplete)."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    owners: tuple[NodeAddress, ...]

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int, NodeAddress]]) -> SlotMap:
        ordered = sorted(ranges)
        for (_, end, _), (start, _, _) in itertools.pairwise(ordered):
            if start <= end:
                raise ValueError(f"overlapping slot ranges at slot {start}")
        return cls(
            tuple(r[0] for r in ordered), tuple(r[1] for r in ordered), tuple(r[2] for r in ordered)
        )

    @classmethod
    def from_shards(cls, reply: Iterable[Any]) -> SlotMap:
        """Parse a ``CLUSTER SHARDS`` reply, as redis-py returns it (each shard a mapping or
        a flat ``[key, value, ...]`` list, keys as bytes or str). Each shard's primary is
        its node with ``role`` master, the first one not failed: after a failover, Valkey
        lists the dead primary in its shard as a master still, with ``health`` fail. It
        is reached at its ``endpoint``, or its ``ip`` when the endpoint is unknown (``?``,
        empty)."""
        ranges: list[tuple[int, int, NodeAddress]] = []
        for shard in reply:
            fields = _mapping(shard)
            slots = [int(s) for s in fields.get("slots", [])]
            masters = [
                node
                for node in map(_mapping, fields.get("nodes", []))
                if _text(node.get("role")) == "master"
            ]
            masters.sort(key=lambda node: _text(node.get("health")) == "fail")
            primary = masters[0] if masters else None
            if primary is None or not slots:
                continue
            host = _text(primary.get("endpoint"))
            if host in ("", "?"):
                host = _text(primary.get("ip"))
            address = NodeAddress(host, int(primary["port"]))
            ranges.extend(
                (start, end, address) for start, end in zip(slots[::2], slots[1::2], strict=True)
            )
        return cls.from_ranges(ranges)

    def owner(self, slot: int) -> NodeAddress | None:
        """The primary that serves ``slot``; None when no shard does."""
        index = bisect.bisect_right(self.starts, slot) - 1
        if index >= 0 and slot <= self.ends[index]:
            return self.owners[index]
        return None

    def owner_of(self, name: str | bytes) -> NodeAddress | None:
        return self.owner(slot_of(name))

    @property
    def primaries(self) -> frozenset[NodeAddress]:
        """Every primary that owns at least one slot."""
        return frozenset(self.owners)

    def tag_on(self, primary: NodeAddress) -> str | None:
        """A short hash tag whose slot ``primary`` owns (the same one for every caller
        with this map), or None when it owns none."""
        if primary not in self.owners:
            return None
        for n in range(_TAG_TRIES):
            tag = str(n)
            if self.owner(slot_of(tag)) == primary:
                return tag
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    """A field list or a mapping, with text keys."""
    items: Iterable[tuple[Any, Any]] = (
        value.items() if isinstance(value, Mapping) else zip(value[::2], value[1::2], strict=True)
    )
    return {_text(key): item for key, item in items}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
