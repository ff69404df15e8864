"""``sanic-feeds bench``: its options, and the invocation from targets to report.

The server's command line mounts :func:`add_bench_arguments` on its
``bench`` subcommand and calls :func:`run_bench`; ``python -m
sanic_feeds.bench`` does the same standalone.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from .clients import check_reachable
from .errors import BenchError
from .limits import Deadline, raise_open_file_limit
from .report import ProgressLine, format_table, json_lines, write_plot
from .results import RunResult, median_result, with_ratio
from .runner import Target, run_once
from .scenarios import CHANNEL_NAMESPACE, RunPlan, Scenario, ScenarioConfig, plan_run
from .spawn import REFERENCE_MODULE, ServerGroup
from .stats import LatencyHistogram

__all__ = ["add_bench_arguments", "run_bench"]

PROG = "sanic-feeds bench"
COMPARE = "compare"

#: Exit statuses.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INCORRECT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: How to get the bench's optional dependencies (pyproject's ``bench`` extra).
INSTALL_EXTRA = "pip install 'sanic-feeds[bench]'"

_DESCRIPTION = """\
Drive a sanic-feeds deployment over real WebSockets and measure it: delivered
messages per second, end-to-end latency (p50, p99, max), messages lost,
misrouted and duplicated, server memory per connection and CPU time.

scenarios:
  fanout   one channel, --subscribers N, one publisher at --rate
  rooms    --channels C x --subscribers-per-channel k, a publisher per channel,
           --rate split between them
  idle     --connections N idle connections; server memory per connection
  churn    --stay N subscribers stay while --churn-rate R connect and R
           disconnect per second, messages flowing; loss counts only those
           that stayed
  compare  run SCENARIO (default fanout) against the target and the reference
           server, interleaved, and print the ratio (same as --with-reference);
           --spawn N --baseline-arg ARG compares with N instances run with ARG
           instead

Subscribers connect to /feed/<channel> and wait for "subscribed"; the publisher
sends text frames on its own /feed/<channel> socket. Each message carries its
sequence number, send time and channel, so every subscriber counts loss,
duplicates, misrouting and latency (on this machine's clock). The load comes
from --procs processes; the figures include their cost, so compare ratios
taken in one invocation (--with-reference, --ceiling) rather than absolute
figures from different days."""

_EPILOG = """\
the ceiling (--ceiling): the scenario runs against a sink started by the bench
on a free port (python -m sanic_feeds.bench.sink), a websockets server that
splices each published frame into a message event without any JSON work,
frames it once and writes the same bytes to every subscriber's transport.
What the bench reaches against it is the load generator's own ceiling on this
machine; a target that comes close to it is measuring the bench, not itself.

targets: --url (repeatable; subscribers are spread round-robin), --spawn N
(sanic-feeds serve on free ports, with --rate-limit 0 and, unless --joins,
--quiet-namespaces bench), or --target reference (python -m
sanic_feeds.bench.reference_server, which --with-reference also starts).
A server started by hand must run with --rate-limit 0, or the publisher is
refused. Loss is counted --drain seconds after the last publish. RSS per
connection is the server's growth while the run's connections opened: measure
it on a fresh server, since memory an earlier run freed is reused silently.

extra dependencies (pip install 'sanic-feeds[bench]'): psutil measures the
servers' memory and CPU; idle and --server-pid need it, other runs go on
without it and print '-' and a note. matplotlib is needed by --plot only.

examples:
  sanic-feeds bench fanout --spawn 1 --subscribers 1000 --rate max --duration 5
  sanic-feeds bench rooms --spawn 2 --broker redis://127.0.0.1:6379/0 --json
  sanic-feeds bench compare fanout --url ws://127.0.0.1:8000 --server-pid 1234
  sanic-feeds bench fanout --spawn 2 --broker redis://127.0.0.1:6379/0 --rate 100 \
      --repeat 3 --baseline-arg=--metrics=0     # what counting metrics costs
  sanic-feeds bench idle --spawn 1 --connections 5000
  sanic-feeds bench churn --target reference --stay 500 --churn-rate 100

exit status: 0 done, 1 the run failed or needs a missing dependency (message
on stderr), 2 bad options, 3 with --strict: a message was lost, misrouted or
duplicated."""


class _UsageError(BenchError):
    """Options that cannot work together; exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return value


def _rate(text: str) -> float | None:
    if text == "max":
        return None
    return _positive_float(text)


def _ws_url(text: str) -> str:
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        url = ("ws" if parts.scheme == "http" else "wss") + url[len(parts.scheme) :]
        parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not a ws:// or http:// base URL: {text!r}")
    return url


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``bench`` options on ``parser``."""
    parser.description = _DESCRIPTION
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    scenarios = [s.value for s in Scenario]
    parser.add_argument(
        "scenario",
        choices=[*scenarios, COMPARE],
        metavar="SCENARIO",
        help=f"one of {', '.join(scenarios)}, {COMPARE}",
    )
    parser.add_argument(
        "compared",
        nargs="?",
        choices=scenarios,
        metavar="COMPARED",
        help="with compare: the scenario to compare (default fanout)",
    )

    target = parser.add_argument_group("target")
    target.add_argument(
        "--url",
        action="append",
        type=_ws_url,
        default=[],
        metavar="URL",
        help="base URL of a running instance, ws://HOST:PORT (repeat for several)",
    )
    target.add_argument(
        "--spawn",
        type=_positive_int,
        metavar="N",
        help="start N 'sanic-feeds serve' instances on free ports, stop them at the end",
    )
    target.add_argument(
        "--broker",
        default="memory://",
        metavar="URL",
        help="broker of the --spawn instances (default memory://; N > 1 needs redis://, "
        "redis+cluster:// or redis+sentinel://)",
    )
    target.add_argument(
        "--target",
        choices=["feeds", "reference"],
        default="feeds",
        help=f"feeds (default) or reference: python -m {REFERENCE_MODULE}, spawned "
        "unless --url points at one",
    )
    target.add_argument(
        "--server-pid",
        action="append",
        type=_positive_int,
        default=[],
        metavar="PID",
        help="with --url: a server process to measure (RSS, CPU), repeat for several",
    )
    target.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for each spawned 'serve' (repeat; e.g. --server-arg=--max-queue=5000)",
    )
    target.add_argument(
        "--baseline-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="with --spawn: also spawn as many instances with this extra 'serve' argument "
        "(repeat), run them interleaved with the target and print the ratio to them, "
        "e.g. --baseline-arg=--metrics=0",
    )
    target.add_argument(
        "--joins",
        action="store_true",
        help="let spawned instances announce joins and leaves on the bench's channels",
    )
    target.add_argument(
        "--reference-server",
        type=Path,
        metavar="FILE",
        help=f"run this script as the reference server instead of python -m {REFERENCE_MODULE} "
        "(it gets --port PORT and must listen on 127.0.0.1)",
    )
    target.add_argument(
        "--with-reference",
        action="store_true",
        help="also run against a spawned reference server, interleaved, and print ratios",
    )
    target.add_argument(
        "--ceiling",
        action="store_true",
        help="run against the bench's own sink instead, to show the load generator's "
        "ceiling (see below)",
    )

    load = parser.add_argument_group("load")
    load.add_argument(
        "--subscribers",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="fanout: subscribers (default 1000)",
    )
    load.add_argument(
        "--channels",
        type=_positive_int,
        default=100,
        metavar="C",
        help="rooms: channels (default 100)",
    )
    load.add_argument(
        "--subscribers-per-channel",
        type=_positive_int,
        default=10,
        metavar="K",
        help="rooms: subscribers of each channel (default 10)",
    )
    load.add_argument(
        "--connections",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="idle: connections (default 1000)",
    )
    load.add_argument(
        "--stay",
        type=_positive_int,
        default=500,
        metavar="N",
        help="churn: subscribers that stay (default 500)",
    )
    load.add_argument(
        "--churn-rate",
        type=_positive_float,
        default=50.0,
        metavar="R",
        help="churn: connects (and disconnects) per second (default 50)",
    )
    load.add_argument(
        "--churn-lifetime",
        type=_positive_float,
        default=1.0,
        metavar="S",
        help="churn: seconds each churning connection stays (default 1)",
    )
    load.add_argument(
        "--rate",
        type=_rate,
        default=100.0,
        metavar="R|max",
        help="offered publishes per second over all channels (default 100), or max: as "
        "fast as the slowest subscriber keeps up, --window messages ahead at most",
    )
    load.add_argument(
        "--duration",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds of publishing; idle: of holding (default 10)",
    )
    load.add_argument(
        "--messages",
        type=_positive_int,
        metavar="M",
        help="publish exactly M messages per channel instead of --duration",
    )
    load.add_argument(
        "--payload",
        type=_positive_int,
        default=100,
        metavar="BYTES",
        help="size of each published JSON payload (default 100)",
    )
    load.add_argument(
        "--drain",
        type=_non_negative_float,
        default=2.0,
        metavar="S",
        help="seconds to wait after the last publish before counting loss (default 2)",
    )
    load.add_argument(
        "--window",
        type=_positive_int,
        default=20,
        metavar="W",
        help="--rate max: most messages of a channel published ahead of its slowest "
        "subscriber (default 20); latency at max rate is mostly this queue",
    )

    generator = parser.add_argument_group("load generator")
    generator.add_argument(
        "--procs",
        type=_positive_int,
        default=os.cpu_count() or 1,
        metavar="P",
        help=f"load generator processes (default: CPU count, {os.cpu_count()})",
    )
    generator.add_argument(
        "--connect-concurrency",
        type=_positive_int,
        default=100,
        metavar="N",
        help="handshakes in progress at once per process (default 100)",
    )
    generator.add_argument(
        "--open-timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="seconds a connection may take to get 'subscribed' (default 30)",
    )
    generator.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        metavar="K",
        help="run K times; print every run and the medians",
    )
    generator.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="hard limit on the whole invocation (default: from the load)",
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--json",
        action="store_true",
        help="JSON lines on stdout, one per result (the table goes to stderr)",
    )
    output.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="write a latency histogram (needs matplotlib)"
    )
    output.add_argument("--quiet", action="store_true", help="no progress on stderr")
    output.add_argument(
        "--strict",
        action="store_true",
        help="exit 3 when a message was lost, misrouted or duplicated",
    )


def run_bench(args: argparse.Namespace) -> int:
    """Run the invocation ``args`` describes; return the exit status.

    Errors a user can act on are printed as one line on stderr (status 1,
    also for a missing optional dependency the options need; 2 for options
    that do not go together); results go to stdout.
    """
    try:
        return _run(args)
    except _UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BenchError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _config(args: argparse.Namespace) -> tuple[ScenarioConfig, bool]:
    """The scenario's configuration, and whether to compare with the reference."""
    if args.compared is not None and args.scenario != COMPARE:
        raise _UsageError(f"a second scenario only goes with {COMPARE}")
    compare = args.scenario == COMPARE or args.with_reference
    scenario = (
        Scenario(args.compared or "fanout") if args.scenario == COMPARE else Scenario(args.scenario)
    )
    subscribers, channels = {
        Scenario.FANOUT: (args.subscribers, 1),
        Scenario.ROOMS: (args.channels * args.subscribers_per_channel, args.channels),
        Scenario.IDLE: (args.connections, 1),
        Scenario.CHURN: (args.stay, 1),
    }[scenario]
    config = ScenarioConfig(
        scenario=scenario,
        subscribers=subscribers,
        channels=channels,
        rate_per_s=args.rate,
        duration_s=args.duration,
        messages=args.messages,
        payload_bytes=args.payload,
        drain_s=args.drain,
        window=args.window,
        churn_rate_per_s=args.churn_rate if scenario is Scenario.CHURN else 0.0,
        churn_lifetime_s=args.churn_lifetime,
        procs=args.procs,
        connect_concurrency=args.connect_concurrency,
        open_timeout_s=args.open_timeout,
    )
    return config, compare


def _check_target_options(args: argparse.Namespace, compare: bool) -> None:
    if args.url and args.spawn:
        raise _UsageError(
            "--url and --spawn exclude each other: measure a running "
            "deployment or one the bench starts"
        )
    if args.server_pid and not args.url:
        raise _UsageError("--server-pid goes with --url (spawned servers are measured anyway)")
    if args.target == "reference" and args.spawn:
        raise _UsageError(
            "--spawn starts sanic-feeds instances; --target reference "
            "starts the reference server by itself"
        )
    if args.ceiling and (args.url or args.spawn or args.target == "reference"):
        raise _UsageError(
            "--ceiling runs against the bench's own sink: drop --url, --spawn and --target"
        )
    if compare and args.target == "reference":
        raise _UsageError("the target is already the reference server: nothing to compare")
    spawns_reference = compare or (args.target == "reference" and not args.url)
    script = args.reference_server
    if spawns_reference and script is not None and not script.is_file():
        raise _UsageError(f"--reference-server: no file {script}")
    if args.baseline_arg and not args.spawn:
        raise _UsageError("--baseline-arg goes with --spawn: the baseline instances are spawned")
    if args.baseline_arg and compare:
        raise _UsageError(
            "compare against the reference server or against --baseline-arg instances, not both"
        )
    if not args.ceiling and args.target == "feeds" and not args.url and not args.spawn:
        raise _UsageError(
            "say what to measure: --url ws://HOST:PORT (repeat for several instances), "
            "--spawn N [--broker URL], --target reference or --ceiling"
        )
    if args.spawn:
        scheme = urlsplit(args.broker).scheme
        if scheme == "memory" and args.spawn > 1:
            raise _UsageError(
                f"--spawn {args.spawn} needs a shared broker: with memory:// a message "
                "published on one instance never reaches the others; use --broker "
                "redis://HOST:PORT/DB"
            )


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (matplotlib takes a while)."""
    return importlib.util.find_spec(module) is not None


def _check_dependencies(args: argparse.Namespace, scenario: Scenario) -> None:
    """Fail before any server starts when the options need a dependency that
    is missing: finding out after a whole run would waste it.

    Only ``--plot`` needs matplotlib, and only ``idle`` (whose figure is the
    servers' memory) and ``--server-pid`` need psutil; every other run goes
    without psutil and says in a note what it could not measure (:mod:`.probe`).
    """
    if args.plot is not None and not _installed("matplotlib"):
        raise BenchError(f"--plot needs matplotlib: {INSTALL_EXTRA}")
    if _installed("psutil"):
        return
    if scenario is Scenario.IDLE:
        raise BenchError(f"idle measures server memory and needs psutil: {INSTALL_EXTRA}")
    if args.server_pid:
        raise BenchError(f"--server-pid needs psutil to measure the servers: {INSTALL_EXTRA}")


def _default_timeout_s(config: ScenarioConfig, runs: int) -> float:
    publishing = config.publishing_s if config.publishing_s is not None else 300.0
    if not config.publishes:
        publishing = config.duration_s
    per_run = config.open_timeout_s + 10 + publishing + config.drain_s + 30
    return 60 + runs * per_run


def _start_targets(
    args: argparse.Namespace, servers: ServerGroup, compare: bool, progress: ProgressLine
) -> tuple[Target, Target | None]:
    """The target, and the reference to compare with (None: no comparison)."""
    if args.ceiling:
        progress.message("starting the ceiling sink")
        sink = servers.start_sink()
        main = Target("sink (ceiling)", (sink.url,), (sink.pid,))
    elif args.target == "reference" and not args.url:
        progress.message("starting the reference server")
        reference = servers.start_reference(args.reference_server)
        main = Target("reference", (reference.url,), (reference.pid,))
    elif args.url:
        label = "reference" if args.target == "reference" else "feeds"
        if len(args.url) > 1:
            label += f"({len(args.url)})"
        main = Target(label, tuple(args.url), tuple(args.server_pid))
    else:
        count = args.spawn
        plural = "s" if count > 1 else ""
        progress.message(f"starting {count} sanic-feeds instance{plural} on {args.broker}")
        started = servers.start_feeds(
            count, args.broker, announce_joins=args.joins, extra_args=args.server_arg
        )
        label = "feeds" + (f"({count})" if count > 1 else "")
        main = Target(label, tuple(s.url for s in started), tuple(s.pid for s in started))
    if args.baseline_arg:
        # The same instances with one difference, to measure what it costs.
        progress.message(
            f"starting {args.spawn} baseline instance(s): {' '.join(args.baseline_arg)}"
        )
        baseline = servers.start_feeds(
            args.spawn,
            args.broker,
            announce_joins=args.joins,
            extra_args=[*args.server_arg, *args.baseline_arg],
        )
        label = f"{main.label} {' '.join(args.baseline_arg)}"
        return main, Target(label, tuple(s.url for s in baseline), tuple(s.pid for s in baseline))
    if not compare:
        return main, None
    progress.message("starting the reference server")
    reference_server = servers.start_reference(args.reference_server)
    return main, Target("reference", (reference_server.url,), (reference_server.pid,))


def _run(args: argparse.Namespace) -> int:
    config, compare = _config(args)
    _check_target_options(args, compare)
    compare = compare or bool(args.baseline_arg)
    if args.plot is not None and args.plot.parent and not args.plot.parent.is_dir():
        raise _UsageError(f"--plot: no directory {args.plot.parent}")
    _check_dependencies(args, config.scenario)
    runs = args.repeat * (2 if compare else 1)
    deadline = Deadline(args.timeout or _default_timeout_s(config, runs))
    progress = ProgressLine(enabled=not args.quiet)
    open_files = raise_open_file_limit()
    per_process = config.subscribers // max(1, min(config.procs, config.subscribers)) + 64
    if per_process > open_files:
        progress.message(
            f"warning: {per_process} connections per process but the open file limit is "
            f"{open_files}: raise it (ulimit -n) or use more --procs"
        )

    results: list[RunResult] = []
    references: list[RunResult] = []
    with ServerGroup(deadline) as servers:
        main, reference = _start_targets(args, servers, compare, progress)
        probe_channel = f"{CHANNEL_NAMESPACE}:probe-{secrets.token_hex(3)}"
        for target in (main, reference):
            if target is not None:
                check_reachable(list(target.urls), probe_channel, min(10.0, deadline.remaining_s()))
        for run in range(1, args.repeat + 1):
            # Interleaved, so both see the same machine conditions in turn.
            results.append(_run_target(config, main, run, deadline, progress))
            if reference is not None:
                references.append(_run_target(config, reference, run, deadline, progress))

    if references:
        results = [
            with_ratio(ours, theirs) for ours, theirs in zip(results, references, strict=True)
        ]
    rows = _with_medians(results, references)
    _print_report(rows, as_json=args.json)
    if args.plot is not None:
        series: dict[str, LatencyHistogram] = {}
        for result in [*results, *references]:
            series.setdefault(result.target, LatencyHistogram()).merge(result.latency)
        write_plot(args.plot, series, f"{config.scenario.value}: end-to-end latency")
        progress.message(f"latency histogram written to {args.plot}")
    if args.strict and any(r.lost or r.misrouted or r.duplicates for r in results):
        return EXIT_INCORRECT
    return EXIT_OK


def _run_target(
    config: ScenarioConfig, target: Target, run: int, deadline: Deadline, progress: ProgressLine
) -> RunResult:
    plan: RunPlan = plan_run(config, target.urls, secrets.token_hex(3))
    return run_once(plan, target, run, deadline, progress)


def _with_medians(results: Sequence[RunResult], references: Sequence[RunResult]) -> list[RunResult]:
    rows = list(results)
    if len(results) > 1:
        middle = median_result(results)
        if references:
            middle = with_ratio(middle, median_result(references))
        rows.append(middle)
    rows += references
    if len(references) > 1:
        rows.append(dataclasses.replace(median_result(references), vs_reference=None))
    return rows


def _print_report(rows: Sequence[RunResult], *, as_json: bool) -> None:
    table = format_table(rows)
    if as_json:
        print(json_lines(rows), flush=True)
        print(table, file=sys.stderr, flush=True)
    else:
        print(table, flush=True)
