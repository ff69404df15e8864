"""How Redis fails: every exception that is Redis's (or the network's) doing, not a bug,
and the one error clients are told about instead."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import RedisClusterException, RedisError

from ..errors import BrokerUnavailable

__all__ = ["REDIS_FAILURES", "describe", "unavailable"]

#: RedisCluster raises RedisClusterException, which is no RedisError, when no node
#: answers at all.
REDIS_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)


@contextlib.contextmanager
def unavailable() -> Iterator[None]:
    """Map every way Redis can fail to the one error clients are told about."""
    try:
        yield
    except REDIS_FAILURES as exc:
        raise BrokerUnavailable(f"broker unavailable: {describe(exc)}") from exc


def describe(failure: BaseException) -> str:
    """What went wrong, in a line a person reads."""
    if isinstance(failure, MasterNotFoundError):
        # redis-py's own text holds the repr of every client it tried: kilobytes.
        return "no Sentinel names the master (none answered, or none monitors that name)"
    return str(failure)
