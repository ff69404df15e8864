"""Publish rate limiting per connection: a token bucket, pure logic."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = ["RateLimiter", "Verdict"]


class Verdict(Enum):
    ALLOW = "allow"
    #: Refuse this publish and tell the client (``error rate_limited``).
    REJECT = "reject"
    #: The client keeps going over the limit: close it (1008).
    DISCONNECT = "disconnect"


@dataclass(slots=True)
class RateLimiter:
    """Token bucket: ``rate_per_s`` tokens a second, at most ``burst`` banked.

    After ``max_strikes`` refusals in a row (no publish allowed in between)
    the verdict becomes :attr:`Verdict.DISCONNECT`. ``rate_per_s <= 0`` turns
    the limiter off. Time is passed in, so the limiter is testable without a
    clock.
    """

    rate_per_s: float
    burst: float
    max_strikes: int = 50
    _tokens: float = field(init=False)
    _updated_s: float | None = field(init=False, default=None)
    _strikes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._tokens = self.burst

    def check(self, now_s: float) -> Verdict:
        if self.rate_per_s <= 0:
            return Verdict.ALLOW
        if self._updated_s is not None:
            elapsed_s = max(0.0, now_s - self._updated_s)
            self._tokens = min(self.burst, self._tokens + elapsed_s * self.rate_per_s)
        self._updated_s = now_s
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._strikes = 0
            return Verdict.ALLOW
        self._strikes += 1
        if self._strikes > self.max_strikes:
            return Verdict.DISCONNECT
        return Verdict.REJECT
