"""``sanic-feeds drill``: its options, and the invocation from drills to report."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from ..bench.cli import _non_negative_float, _positive_float, _positive_int
from ..bench.clients import run_event_loop
from ..bench.errors import BenchError
from ..bench.limits import Deadline, raise_open_file_limit
from .plan import Drill, DrillConfig, Timeline
from .report import format_table, json_lines
from .results import DrillResult
from .runner import print_progress, run_drill

__all__ = ["add_drill_arguments", "run_drills"]

PROG = "sanic-feeds drill"

#: Exit statuses.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_BROKEN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_DESCRIPTION = """\
Run sanic-feeds through faults under load and count every message
(docs/reliability.md). Each drill starts its own Redis on a free port (or uses
--redis) and --instances instances of 'sanic-feeds serve', connects --clients
clients (a third /feed raw, a third /feed JSON reconnecting with since/epoch, a
third /ws through FeedsClient; each moves to the next instance when it
reconnects), publishes --rate messages/s through POST /api/publish (idempotency
keys, retried on the next instance after a 503), injects one fault a quarter
into --duration, and counts, at every client, what it was owed, got and told.

drills:
  pubsub-kill              CLIENT KILL TYPE pubsub
  redis-restart-aof        Redis SIGKILLed, restarted --redis-down s later on its AOF
  redis-restart            the same without persistence (a new epoch)
  instance-kill            instance 0 SIGKILLed, restarted --fault-for s later
  instance-stop            instance 0 SIGSTOPped for --fault-for s
  slow-clients             --slow-clients more /feed JSON clients stop reading for
                           --fault-for s
  drain                    instance 0 SIGTERMed (drains), restarted after it exited
                           and --fault-for s passed
  publisher-redis-restart  Redis SIGKILLed and restarted (AOF) while a Publisher with
                           a retry buffer publishes, instead of the HTTP API
  output-buffer            Redis drops every instance's pub/sub connection over its
                           output-buffer limit (lowered to pubsub 32kb 16kb 1) on one
                           publication of 80 KB"""

_EPILOG = """\
--redis URL: the drills that crash or reconfigure Redis (redis-restart-aof,
redis-restart, publisher-redis-restart, output-buffer) are skipped; the others
use a channel of their own and leave the rest of that Redis alone.

example:
  sanic-feeds drill --instances 3 --clients 150 --rate 100 --duration 10

exit status: 0 done, 1 a drill could not run (message on stderr), 2 bad
options, 3 a JSON or /ws client lost a message unexplained, or got one twice
or out of order."""


class _UsageError(BenchError):
    """Options that cannot work together; exit status 2."""


def add_drill_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``drill`` options on ``parser``."""
    parser.description = _DESCRIPTION
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    defaults = DrillConfig()
    parser.add_argument(
        "--drill",
        action="append",
        choices=[drill.value for drill in Drill],
        default=[],
        metavar="NAME",
        help="a drill to run (repeat for several; default: all, in the order above)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        metavar="K",
        help="run each drill K times (default 1)",
    )
    deployment = parser.add_argument_group("deployment")
    deployment.add_argument(
        "--instances",
        type=_positive_int,
        default=defaults.instances,
        metavar="N",
        help=f"instances of sanic-feeds serve (default {defaults.instances})",
    )
    deployment.add_argument(
        "--redis",
        metavar="URL",
        help="use this Redis instead of starting one (the drills that crash it are skipped)",
    )
    deployment.add_argument(
        "--history-size",
        type=_positive_int,
        metavar="N",
        help="the instances' --history-size (and the Publisher's); default: serve's",
    )
    deployment.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for each instance (repeat; e.g. --server-arg=--recovery-max=1000)",
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--clients",
        type=_positive_int,
        default=defaults.clients,
        metavar="N",
        help=f"clients: a third raw, JSON, /ws each (default {defaults.clients})",
    )
    load.add_argument(
        "--slow-clients",
        type=int,
        default=defaults.slow_clients,
        metavar="N",
        help=f"slow-clients: clients that stop reading (default {defaults.slow_clients})",
    )
    load.add_argument(
        "--rate",
        type=_positive_float,
        default=defaults.rate_per_s,
        metavar="R",
        help=f"publications per second (default {defaults.rate_per_s:g})",
    )
    load.add_argument(
        "--duration",
        type=_positive_float,
        default=defaults.duration_s,
        metavar="S",
        help=f"seconds of publishing per drill, more when the fault needs it "
        f"(default {defaults.duration_s:g})",
    )
    load.add_argument(
        "--fault-for",
        type=_non_negative_float,
        default=defaults.fault_for_s,
        metavar="S",
        help="seconds an instance stays killed, stopped or drained, and slow clients "
        f"stop reading (default {defaults.fault_for_s:g})",
    )
    load.add_argument(
        "--redis-down",
        type=_non_negative_float,
        default=defaults.redis_down_s,
        metavar="S",
        help=f"seconds between Redis's SIGKILL and its restart (default {defaults.redis_down_s:g})",
    )
    load.add_argument(
        "--settle",
        type=_non_negative_float,
        default=defaults.settle_s,
        metavar="S",
        help="most seconds to wait after the last publish for clients to catch up "
        f"(default {defaults.settle_s:g})",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--json",
        action="store_true",
        help="JSON lines on stdout, one per drill run (the table goes to stderr)",
    )
    output.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _config(args: argparse.Namespace) -> DrillConfig:
    if args.clients < 3:
        raise _UsageError("--clients must be at least 3 (a third of each kind)")
    if args.slow_clients < 0:
        raise _UsageError("--slow-clients must not be negative")
    return DrillConfig(
        instances=args.instances,
        clients=args.clients,
        slow_clients=args.slow_clients,
        rate_per_s=args.rate,
        duration_s=args.duration,
        fault_for_s=args.fault_for,
        redis_down_s=args.redis_down,
        settle_s=args.settle,
        history_size=args.history_size,
        server_args=tuple(args.server_arg),
    )


def run_drills(args: argparse.Namespace) -> int:
    """Run the invocation ``args`` describes; return the exit status."""
    try:
        config = _config(args)
        drills = [Drill(name) for name in args.drill] or list(Drill)
        raise_open_file_limit()
        # The drill reports what its clients and publisher went through; their
        # warnings (reconnecting, retrying) would only bury the table.
        logging.getLogger("sanic_feeds").setLevel(logging.ERROR)
        results = run_event_loop(_run_all(drills, config, args))
    except _UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BenchError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    table = format_table(results)
    if args.json:
        print(table, file=sys.stderr)
        print(json_lines(results), flush=True)
    else:
        print(table, flush=True)
    return EXIT_BROKEN if any(result.broken for result in results) else EXIT_OK


async def _run_all(
    drills: list[Drill], config: DrillConfig, args: argparse.Namespace
) -> list[DrillResult]:
    # A generous bound on the whole invocation, from the planned time of each run.
    per_run_s = (
        120.0
        + config.settle_s
        + max(Timeline.of(drill, config).publish_until_s for drill in drills)
    )
    deadline = Deadline(per_run_s * len(drills) * args.repeat)
    results = []
    began = time.monotonic()
    for run in range(1, args.repeat + 1):
        for drill in drills:
            progress = (
                (lambda line: None)
                if args.quiet
                else print_progress(f"{drill.value} run {run}", began)
            )
            results.append(
                await run_drill(
                    drill, config, run, deadline=deadline, redis_url=args.redis, progress=progress
                )
            )
            await asyncio.sleep(0)
    return results
