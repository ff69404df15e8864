from __future__ import annotations

from sanic_feeds.ratelimit import RateLimiter, Verdict


def test_burst_is_allowed_at_once_then_the_rate_applies() -> None:
    limiter = RateLimiter(rate_per_s=10, burst=5)
    assert [limiter.check(0.0) for _ in range(5)] == [Verdict.ALLOW] * 5
    assert limiter.check(0.0) is Verdict.REJECT
    assert limiter.check(0.1) is Verdict.ALLOW  # one token back after 1/rate seconds
    assert limiter.check(0.1) is Verdict.REJECT


def test_tokens_never_bank_past_the_burst() -> None:
    limiter = RateLimiter(rate_per_s=100, burst=3)
    limiter.check(0.0)
    assert [limiter.check(1000.0) for _ in range(4)] == [Verdict.ALLOW] * 3 + [Verdict.REJECT]


def test_going_on_over_the_limit_disconnects() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, max_strikes=3)
    assert limiter.check(0.0) is Verdict.ALLOW
    assert [limiter.check(0.0) for _ in range(3)] == [Verdict.REJECT] * 3
    assert limiter.check(0.0) is Verdict.DISCONNECT


def test_an_allowed_publish_forgives_earlier_strikes() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, max_strikes=2)
    limiter.check(0.0)
    assert limiter.check(0.0) is Verdict.REJECT
    assert limiter.check(1.0) is Verdict.ALLOW
    assert [limiter.check(1.0) for _ in range(2)] == [Verdict.REJECT] * 2


def test_rate_zero_turns_the_limit_off() -> None:
    limiter = RateLimiter(rate_per_s=0, burst=1)
    assert all(limiter.check(0.0) is Verdict.ALLOW for _ in range(10_000))
