"""``sanic-feeds drill``: faults under load, and every message counted (docs/reliability.md).

The server's command line mounts :func:`add_drill_arguments` on its ``drill``
subcommand and calls :func:`run_drills`.

Modules: :mod:`.cli` the options, :mod:`.plan` the drills and their timing,
:mod:`.runner` runs one drill, :mod:`.deployment` its Redis and instances,
:mod:`.redis_server` the Redis it starts, :mod:`.faults` what each drill does
to them, :mod:`.load` the publishers, :mod:`.http` their HTTP client,
:mod:`.subscribers` the clients, :mod:`.readiness` the ``/ready`` watch,
:mod:`.ledger` and :mod:`.results` the pure accounting, :mod:`.report` the
table and JSON lines. It reuses the bench's server spawning, WebSocket reader
and errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cli import add_drill_arguments, run_drills

__all__ = ["add_drill_arguments", "run_drills"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the command line mounts the options only for `drill`.
    if name in __all__:
        from . import cli

        return getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
