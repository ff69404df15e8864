"""Bounds of a run: its time budget and the process's open file limit."""

from __future__ import annotations

import resource
import time

from .errors import BenchTimeout

__all__ = ["Deadline", "raise_open_file_limit"]


class Deadline:
    """A point on the monotonic clock after which every wait gives up.

    One deadline covers a whole ``bench`` invocation (``--timeout``), so no
    combination of phases, repeats and targets can run longer than that.
    """

    __slots__ = ("_at", "total_s")

    def __init__(self, total_s: float) -> None:
        #: The budget it was created with, in seconds, for messages.
        self.total_s = total_s
        self._at = time.monotonic() + total_s

    def remaining_s(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._at

    def check(self, phase: str) -> None:
        """Raise :class:`BenchTimeout` naming ``phase`` when the time is up."""
        if self.expired():
            raise BenchTimeout(
                f"gave up after --timeout {self.total_s:g} s while {phase} "
                "(raise --timeout or lower the load)"
            )


def raise_open_file_limit() -> int:
    """Lift the soft ``RLIMIT_NOFILE`` to the hard limit; return the new soft limit.

    Every WebSocket is a file descriptor, and the default soft limit (often
    1024) is far below what a load generator holds. Child processes inherit
    the raised limit, so calling this once in the parent covers spawned
    servers too.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            # Some kernels cap the soft limit below an unlimited hard one
            # (nr_open); keep what we have rather than fail the run.
            return soft
        return target
    return soft
