"""``sanic-feeds bench``: the load generator (docs/benchmarks.md).

The server's command line mounts :func:`add_bench_arguments` on its
``bench`` subcommand and calls :func:`run_bench`; ``python -m
sanic_feeds.bench SCENARIO ...`` runs it standalone.

Modules: :mod:`.cli` the options, :mod:`.scenarios` plans a run,
:mod:`.runner` drives it from the parent process, :mod:`.clients` is what
runs in each load-generator process, :mod:`.ipc` what they tell each other,
:mod:`.payload` the published message, :mod:`.stats` and :mod:`.results` the
pure accounting, :mod:`.report` shows it, :mod:`.spawn` starts servers,
:mod:`.probe` measures them, :mod:`.sink` is the ``--ceiling`` broadcaster,
:mod:`.reference_server` the yardstick of ``--with-reference``,
:mod:`.limits` and :mod:`.errors` bound and report failures.

Extra dependencies (``pip install 'sanic-feeds[bench]'``): psutil measures
the servers' memory and CPU (needed by ``idle`` and ``--server-pid``; other
runs go without and say so in a note), matplotlib draws ``--plot``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cli import add_bench_arguments, run_bench

__all__ = ["add_bench_arguments", "run_bench"]


def __getattr__(name: str) -> Any:
    # Imported on first use, not with the package: the servers the bench
    # starts (python -m sanic_feeds.bench.reference_server, .sink) and its
    # worker processes import this package too, and need none of the CLI.
    if name in __all__:
        from . import cli

        return getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
