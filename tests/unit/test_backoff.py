"""Full-jitter backoff (``backoff.py``), pure: a seeded generator, no clock."""

from __future__ import annotations

import random

import pytest

from sanic_feeds.backoff import Backoff, PromptBackoff


def test_the_ceiling_doubles_up_to_the_maximum_and_every_delay_is_under_it() -> None:
    backoff = Backoff(0.1, 1.0, rng=random.Random(7))
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    delays = [backoff.next_delay_s() for _ in ceilings]
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))


def test_delays_are_spread_not_in_lockstep() -> None:
    delays = {Backoff(1.0, 1.0, rng=random.Random(seed)).next_delay_s() for seed in range(50)}
    assert len(delays) == 50
    assert min(delays) < 0.25 and max(delays) > 0.75


def test_reset_brings_the_ceiling_back_to_the_minimum() -> None:
    backoff = Backoff(0.05, 2.0, rng=random.Random(1))
    for _ in range(10):
        backoff.next_delay_s()
    backoff.reset()
    assert all(backoff.next_delay_s() <= 0.05 for _ in range(1))


@pytest.mark.parametrize(("min_s", "max_s"), [(0, 1), (-1, 1), (2, 1)])
def test_bounds_must_make_sense(min_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="min_s"):
        Backoff(min_s, max_s)


def test_prompt_backoff_retries_within_prompt_s_early_in_an_outage_then_backs_off() -> None:
    backoff = PromptBackoff(0.1, 5.0, 0.5, rng=random.Random(3))
    early = [backoff.next_delay_s(outage_s) for outage_s in (0.0, 0.5, 1.0, 2.0, 4.99) * 20]
    assert all(0 <= delay <= 0.1 for delay in early)
    assert len(set(early)) == len(early)  # jittered, not in lockstep
    ceilings = [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    later = [backoff.next_delay_s(5.0 + n) for n in range(len(ceilings))]
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(later, ceilings, strict=True))


def test_prompt_backoff_reset_backs_off_from_prompt_s_again() -> None:
    backoff = PromptBackoff(0.1, 0.0, 2.0, rng=random.Random(5))
    for _ in range(10):
        backoff.next_delay_s(60.0)
    backoff.reset()
    assert backoff.next_delay_s(60.0) <= 0.1


def test_prompt_backoff_bounds_must_make_sense() -> None:
    with pytest.raises(ValueError, match="prompt_for_s"):
        PromptBackoff(0.1, -1.0, 0.5)
    with pytest.raises(ValueError, match="min_s"):
        PromptBackoff(1.0, 5.0, 0.5)
