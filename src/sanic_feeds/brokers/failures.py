"""How Redis fails: every exception that is Redis's (or the network's) doing, not a bug,
and the one error clients are told about instead."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.exceptions import RedisClusterException, RedisError

from ..errors import BrokerUnavailable

__all__ = ["REDIS_FAILURES", "unavailable"]

#: RedisCluster raises RedisClusterException, which is no RedisError, when no node
#: answers at all.
REDIS_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)


@contextlib.contextmanager
def unavailable() -> Iterator[None]:
    """Map every way Redis can fail to the one error clients are told about."""
    try:
        yield
    except REDIS_FAILURES as exc:
        raise BrokerUnavailable(f"broker unavailable: {exc}") from exc
