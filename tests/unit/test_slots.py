"""The slot map of a Redis Cluster, from CLUSTER SHARDS replies (pure)."""

from __future__ import annotations

import pytest

from sanic_feeds.brokers.keys import channel_keys
from sanic_feeds.brokers.slots import SLOTS, NodeAddress, SlotMap, slot_of

A = NodeAddress("10.0.0.1", 7000)
B = NodeAddress("10.0.0.2", 7001)
C = NodeAddress("10.0.0.3", 7002)


def shard(slots: list[int], *nodes: dict[bytes, object]) -> dict[str, object]:
    return {"slots": slots, "nodes": list(nodes)}


def node(address: NodeAddress, role: bytes, endpoint: bytes | None = None) -> dict[bytes, object]:
    return {
        b"id": b"x" * 40,
        b"port": address.port,
        b"ip": address.host.encode(),
        b"endpoint": address.host.encode() if endpoint is None else endpoint,
        b"role": role,
        b"health": b"online",
    }


def test_slots_follow_the_hash_tag() -> None:
    # Redis Cluster's own examples: CLUSTER KEYSLOT.
    assert slot_of("foo") == 12182
    assert slot_of("{user1000}.following") == slot_of("{user1000}.followers")
    keys = channel_keys("news")
    assert len({slot_of(keys.pubsub), slot_of(keys.meta), slot_of(keys.history)}) == 1
    assert slot_of(keys.idempotency("k")) == slot_of(keys.presence) == slot_of("news")
    assert slot_of(keys.epochs) == slot_of("news")


def test_a_map_from_cluster_shards_names_each_slots_primary() -> None:
    reply = [
        shard([0, 5460], node(A, b"master"), node(NodeAddress("10.0.0.9", 7009), b"replica")),
        # A replica listed first: the primary is the node whose role is master.
        shard([5461, 10922, 16000, 16383], node(C, b"replica"), node(B, b"master")),
        shard([10923, 15999], node(C, b"master")),
    ]
    slot_map = SlotMap.from_shards(reply)
    assert slot_map.owner(0) == slot_map.owner(5460) == A
    assert slot_map.owner(5461) == slot_map.owner(16383) == slot_map.owner(16000) == B
    assert slot_map.owner(10923) == slot_map.owner(15999) == C
    assert slot_map.primaries == {A, B, C}
    assert slot_map.owner_of("foo") == C


def test_a_flat_reply_with_text_keys_parses_the_same() -> None:
    flat = ["slots", [0, 16383], "nodes", [["port", 7000, "ip", "10.0.0.1", "role", "master"]]]
    slot_map = SlotMap.from_shards([flat])
    assert slot_map.owner(123) == A


def test_a_failed_master_listed_beside_the_promoted_one_is_not_the_primary() -> None:
    # Valkey, after a failover: the dead primary stays in its shard, as a master, failed.
    dead = {**node(A, b"master"), b"health": b"fail"}
    slot_map = SlotMap.from_shards([shard([0, 16383], dead, node(B, b"master"))])
    assert slot_map.owner(0) == B
    assert slot_map.primaries == {B}


def test_a_shard_whose_every_master_failed_keeps_one_to_retry() -> None:
    dead = {**node(A, b"master"), b"health": b"fail"}
    assert SlotMap.from_shards([shard([0, 16383], dead)]).owner(0) == A


def test_the_endpoint_is_preferred_to_the_ip_unless_unknown() -> None:
    named = node(A, b"master", endpoint=b"redis-a.internal")
    unknown = node(B, b"master", endpoint=b"?")
    slot_map = SlotMap.from_shards([shard([0, 99], named), shard([100, 199], unknown)])
    assert slot_map.owner(0) == NodeAddress("redis-a.internal", 7000)
    assert slot_map.owner(100) == B


def test_uncovered_slots_and_shards_without_slots_or_primary() -> None:
    reply = [
        shard([100, 200], node(A, b"master")),
        shard([], node(B, b"master")),  # a primary without slots
        shard([300, 400], node(C, b"replica")),  # its primary failed and is not listed
    ]
    slot_map = SlotMap.from_shards(reply)
    assert slot_map.owner(99) is None
    assert slot_map.owner(150) == A
    assert slot_map.owner(201) is None
    assert slot_map.owner(350) is None
    assert slot_map.primaries == {A}


def test_overlapping_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="overlapping"):
        SlotMap.from_ranges([(0, 100, A), (100, 200, B)])


def test_a_tag_on_each_primary_lands_in_its_slots() -> None:
    slot_map = SlotMap.from_ranges([(0, 5460, A), (5461, 10922, B), (10923, SLOTS - 1, C)])
    for primary in (A, B, C):
        tag = slot_map.tag_on(primary)
        assert tag is not None
        assert slot_map.owner_of(tag) == primary
        assert slot_map.tag_on(primary) == tag  # every instance picks the same one
    assert slot_map.tag_on(NodeAddress("10.0.0.4", 7003)) is None


def test_a_tag_is_found_for_a_primary_with_one_slot() -> None:
    slot_map = SlotMap.from_ranges([(0, 9999, A), (10000, 10000, B), (10001, SLOTS - 1, C)])
    tag = slot_map.tag_on(B)
    assert tag is not None and slot_of(tag) == 10000


def test_addresses_print_as_host_and_port() -> None:
    assert str(A) == "10.0.0.1:7000"
    assert str(NodeAddress("::1", 7000)) == "[::1]:7000"
