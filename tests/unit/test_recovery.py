from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanic_feeds.events import Publication, StreamPosition
from sanic_feeds.recovery import contiguous_after, replay_start


def pubs(*offsets: int) -> list[Publication]:
    return [Publication("c", offset, "e", offset) for offset in offsets]


def offsets(publications: list[Publication]) -> list[int]:
    return [pub.offset for pub in publications]


def test_history_then_live_with_overlap_gives_each_offset_once() -> None:
    ready, waiting = contiguous_after(3, pubs(4, 5, 6), pubs(6, 7))
    assert offsets(ready) == [4, 5, 6, 7]
    assert waiting == []


def test_a_gap_splits_what_is_ready_from_what_waits() -> None:
    ready, waiting = contiguous_after(0, pubs(1, 2, 5, 4))
    assert offsets(ready) == [1, 2]
    assert offsets(waiting) == [4, 5]


def test_already_delivered_offsets_are_dropped() -> None:
    ready, waiting = contiguous_after(10, pubs(8, 9, 10, 11))
    assert offsets(ready) == [11]
    assert waiting == []


@given(
    last=st.integers(min_value=0, max_value=50),
    total=st.integers(min_value=0, max_value=60),
    data=st.data(),
)
def test_any_interleaving_of_history_and_live_yields_each_offset_once_in_order(
    last: int, total: int, data: st.DataObject
) -> None:
    """History holds a contiguous run; live holds any subset, in any order, with repeats."""
    wanted = list(range(last + 1, last + 1 + total))
    history = pubs(*wanted)
    live = pubs(*data.draw(st.lists(st.sampled_from(wanted or [0]), max_size=80)))
    split = data.draw(st.integers(min_value=0, max_value=len(history)))
    # History may come in two reads, around the live publications.
    sources = [history[:split], live, history[split:]]
    sources = data.draw(st.permutations(sources))
    ready, waiting = contiguous_after(last, *sources)
    assert offsets(ready) == wanted
    assert waiting == []


@given(
    last=st.integers(min_value=0, max_value=20),
    seen=st.lists(st.integers(min_value=0, max_value=40), max_size=60),
)
def test_ready_is_always_contiguous_and_waiting_starts_after_a_gap(
    last: int, seen: list[int]
) -> None:
    ready, waiting = contiguous_after(last, pubs(*seen))
    assert offsets(ready) == list(range(last + 1, last + 1 + len(ready)))
    assert offsets(waiting) == sorted(set(offsets(waiting)))
    if waiting:
        assert waiting[0].offset > last + 1 + len(ready)
    assert set(offsets(ready)) | set(offsets(waiting)) == {o for o in seen if o > last}


# -- where a resubscription's replay starts


def test_the_same_epoch_replays_from_since_as_a_recovery() -> None:
    since = StreamPosition(41, "e1")
    assert replay_start(since, "e1", None) == (since, True)
    # A record about the epoch does not matter while it is still the channel's.
    assert replay_start(since, "e1", "e0") == (since, True)


def test_the_epoch_the_current_one_replaced_replays_the_new_one_whole_unrecovered() -> None:
    assert replay_start(StreamPosition(41, "e1"), "e2", "e2") == (StreamPosition(0, "e2"), False)


@pytest.mark.parametrize(
    ("since", "epoch", "successor", "why"),
    [
        (StreamPosition(41, "bogus"), "e2", None, "an epoch the channel never had: no record"),
        (StreamPosition(41, "e1"), "e3", "e2", "replaced by e2, itself replaced since"),
        (StreamPosition(41, ""), "e2", None, "since without an epoch"),
        (StreamPosition(41, "e1"), "", "", "a channel without an epoch"),
    ],
)
def test_anything_else_starts_from_now(
    since: StreamPosition, epoch: str, successor: str | None, why: str
) -> None:
    assert replay_start(since, epoch, successor) is None, why
