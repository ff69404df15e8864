"""The bench's one exception: a failure the user can act on, told in one line."""

from __future__ import annotations

__all__ = ["BenchError", "BenchTimeout"]


class BenchError(Exception):
    """A run cannot go on; ``str(exc)`` is the one-line message for the user.

    The command line prints it after ``sanic-feeds bench: error:`` and exits
    with status 1, without a traceback.
    """


class BenchTimeout(BenchError):
    """The hard time limit (``--timeout``) ran out; the message names the phase."""
