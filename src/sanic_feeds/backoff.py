"""Full-jitter exponential backoff, pure logic: how long to wait before the next retry."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "PromptBackoff"]


@dataclass(slots=True)
class Backoff:
    """Delays for reconnects and retries: each is drawn uniformly from ``[0, ceiling]``,
    the ceiling doubling from ``min_s`` up to ``max_s`` (full jitter), so that many
    processes coming back after one outage do not retry in lockstep.

    ``rng`` returns a float in ``[0, 1)``; tests pass their own.
    """

    min_s: float = 0.05
    max_s: float = 2.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    _ceiling_s: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ValueError("Backoff needs 0 < min_s <= max_s")
        self._ceiling_s = self.min_s

    def next_delay_s(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling of the next."""
        delay_s = self.rng.uniform(0, self._ceiling_s)
        self._ceiling_s = min(self.max_s, self._ceiling_s * 2)
        return delay_s

    def reset(self) -> None:
        """An attempt worked: the next failure retries quickly again."""
        self._ceiling_s = self.min_s


@dataclass(slots=True)
class PromptBackoff:
    """Reconnect delays that stay short for the first seconds of an outage, then back off.

    While the outage is younger than ``prompt_for_s``, each delay is drawn uniformly
    from ``[0, prompt_s]`` (an attempt on a server that is down costs a refused
    connection); from then on they come from :class:`Backoff` (``prompt_s`` doubling
    up to ``max_s``). Whoever uses it measures the outage and passes its age.
    """

    prompt_s: float = 0.1
    prompt_for_s: float = 5.0
    max_s: float = 0.5
    rng: random.Random = field(default_factory=random.Random, repr=False)
    _later: Backoff = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.prompt_for_s < 0:
            raise ValueError("PromptBackoff needs prompt_for_s >= 0")
        self._later = Backoff(self.prompt_s, self.max_s, rng=self.rng)

    def next_delay_s(self, outage_s: float) -> float:
        """The delay before the next attempt, ``outage_s`` seconds into the outage."""
        if outage_s < self.prompt_for_s:
            return self.rng.uniform(0, self.prompt_s)
        return self._later.next_delay_s()

    def reset(self) -> None:
        """A connection worked: the next outage starts prompt again."""
        self._later.reset()
