"""Pure planning: how a run is split over processes, URLs and channels."""

from __future__ import annotations

import ctypes
from collections import Counter

import pytest

from sanic_feeds.bench.ipc import ProgressSlots
from sanic_feeds.bench.scenarios import Scenario, ScenarioConfig, plan_run

URLS = ["ws://a", "ws://b"]


def test_fanout_spreads_subscribers_over_urls_and_processes() -> None:
    config = ScenarioConfig(Scenario.FANOUT, subscribers=10, procs=3, rate_per_s=50)
    plan = plan_run(config, URLS, "t1")
    assert plan.channels == ("bench:t1-0",)
    subscribers = [s for w in plan.workers for s in w.subscribers]
    assert len(subscribers) == 10
    assert Counter(s.url for s in subscribers) == {"ws://a": 5, "ws://b": 5}
    assert [len(w.subscribers) for w in plan.workers] == [4, 3, 3]
    [publisher] = [p for w in plan.workers for p in w.publishers]
    assert publisher.rate_per_s == 50
    assert plan.publishers == 1
    assert plan.connections == 11
    assert not any(w.paced for w in plan.workers)


def test_rooms_split_the_rate_and_spread_every_channel() -> None:
    config = ScenarioConfig(Scenario.ROOMS, subscribers=12, channels=4, procs=2, rate_per_s=100)
    plan = plan_run(config, URLS, "t2")
    assert len(set(plan.channels)) == 4
    assert plan.subscribers_per_channel == (3, 3, 3, 3)
    publishers = [p for w in plan.workers for p in w.publishers]
    assert sorted(p.channel for p in publishers) == [0, 1, 2, 3]
    assert {p.rate_per_s for p in publishers} == {25.0}
    per_channel = Counter(s.channel for w in plan.workers for s in w.subscribers)
    assert per_channel == {0: 3, 1: 3, 2: 3, 3: 3}
    # Each channel's subscribers sit in both processes.
    for channel in range(4):
        assert all(any(s.channel == channel for s in w.subscribers) for w in plan.workers)


def test_max_rate_marks_every_process_as_paced() -> None:
    config = ScenarioConfig(Scenario.FANOUT, subscribers=4, procs=2, rate_per_s=None)
    plan = plan_run(config, URLS, "t3")
    assert all(w.paced for w in plan.workers)
    assert [p.rate_per_s for w in plan.workers for p in w.publishers] == [None]


def test_idle_has_no_publisher() -> None:
    plan = plan_run(ScenarioConfig(Scenario.IDLE, subscribers=5, procs=2), URLS, "t4")
    assert plan.publishers == 0
    assert plan.connections == 5


def test_churn_splits_its_rate_over_processes() -> None:
    config = ScenarioConfig(Scenario.CHURN, subscribers=4, procs=2, churn_rate_per_s=30)
    plan = plan_run(config, URLS, "t5")
    churns = [w.churn for w in plan.workers]
    assert all(c is not None and c.rate_per_s == 15 for c in churns)
    assert {c.urls[0] for c in churns if c is not None} == {"ws://a", "ws://b"}


def test_never_more_processes_than_connections() -> None:
    plan = plan_run(ScenarioConfig(Scenario.FANOUT, subscribers=1, procs=8), URLS, "t6")
    assert len(plan.workers) == 2
    assert all(w.procs == 2 for w in plan.workers)


@pytest.mark.parametrize(
    "changes",
    [{"subscribers": 0}, {"subscribers": 10, "channels": 3}, {"rate_per_s": 0.0}],
)
def test_impossible_configs_are_refused(changes: dict[str, object]) -> None:
    values: dict[str, object] = {"scenario": Scenario.ROOMS, "subscribers": 6, **changes}
    with pytest.raises(ValueError):
        ScenarioConfig(**values)  # type: ignore[arg-type]


def test_publishing_time_is_known_unless_max_rate_and_a_count() -> None:
    assert ScenarioConfig(Scenario.FANOUT, 1, duration_s=3).publishing_s == 3
    assert ScenarioConfig(Scenario.FANOUT, 1, rate_per_s=10, messages=20).publishing_s == 2
    assert ScenarioConfig(Scenario.FANOUT, 1, rate_per_s=None, messages=20).publishing_s is None


def test_progress_slots_floor_is_the_slowest_process() -> None:
    array = (ctypes.c_int64 * ProgressSlots.size(2, 3))()
    slots = ProgressSlots(array, procs=2, channels=3)
    slots.clear()
    assert slots.floor(1) == ProgressSlots.NOBODY
    slots.set(0, 1, 40)
    slots.set(1, 1, 25)
    slots.set(1, 2, 7)
    assert (slots.floor(0), slots.floor(1), slots.floor(2)) == (ProgressSlots.NOBODY, 25, 7)
