"""``sanic-feeds bench``: the load generator (SPEC "Performance").

The server's command line mounts :func:`add_bench_arguments` on its
``bench`` subcommand and calls :func:`run_bench`; ``python -m
sanic_feeds.bench SCENARIO ...`` runs it standalone.

Modules: :mod:`.cli` the options, :mod:`.scenarios` plans a run,
:mod:`.runner` drives it from the parent process, :mod:`.clients` is what
runs in each load-generator process, :mod:`.ipc` what they tell each other,
:mod:`.payload` the published message, :mod:`.stats` and :mod:`.results` the
pure accounting, :mod:`.report` shows it, :mod:`.spawn` starts servers,
:mod:`.probe` measures them, :mod:`.sink` is the ``--ceiling`` broadcaster,
:mod:`.limits` and :mod:`.errors` bound and report failures.
"""

from __future__ import annotations

from .cli import add_bench_arguments, run_bench

__all__ = ["add_bench_arguments", "run_bench"]
