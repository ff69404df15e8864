"""The outcome of one run (a row of the report), how it is computed from what
the load-generator processes report, medians of repeated runs, and ratios to
the reference server. Pure values and arithmetic, no I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .ipc import ChurnTally, WorkerResult
from .probe import ServerSample
from .scenarios import RunPlan, Scenario
from .stats import LatencyHistogram, count_lost, median, merge_tallies

__all__ = ["RunResult", "headline", "median_result", "merge_worker_results", "with_ratio"]


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything one run of one scenario against one target measured."""

    scenario: str
    #: Short name of the target in the table ("feeds(2)", "reference", ...).
    target: str
    #: 1-based repetition number, or "median".
    run: int | str
    urls: tuple[str, ...]
    #: Staying subscribers (idle: connections).
    subscribers: int
    channels: int
    publishers: int
    #: Offered publishes per second asked for (None: max).
    requested_rate_per_s: float | None
    #: Messages published, over all channels.
    published: int
    #: Publishes per second achieved.
    offered_per_s: float | None
    #: First deliveries of published messages to staying subscribers.
    delivered: int
    #: What ``delivered`` would be with nothing lost.
    expected: int
    #: ``delivered`` over the time from the first publish to the last delivery.
    delivered_per_s: float | None
    latency: LatencyHistogram
    lost: int
    misrouted: int
    duplicates: int
    reordered: int
    #: Message events without a bench payload (someone else published).
    foreign: int
    #: Connections the server closed during the run, by close code.
    closed_by_server: dict[int, int]
    error_events: dict[str, int]
    presence_events: int
    #: Server memory growth per held connection, in KiB.
    server_rss_per_conn_kb: float | None
    #: Server resident memory at the end of subscribing, in MiB.
    server_rss_mb: float | None
    #: Server CPU time (user + system) from the first publish to the end of the drain.
    server_cpu_s: float | None
    #: Seconds from the first handshake to the last ``subscribed``.
    subscribe_s: float
    #: Seconds from the first publish to the end of the last.
    publish_s: float | None
    churn: ChurnTally | None = None
    notes: tuple[str, ...] = ()
    #: Headline figure as a ratio to the reference server's (see :func:`headline`).
    vs_reference: float | None = None
    #: Server CPU per delivery as a ratio to the reference server's.
    cpu_vs_reference: float | None = None
    #: Latency percentiles, filled from ``latency`` (medians in a median row).
    p50_ms: float | None = field(default=None)
    p99_ms: float | None = field(default=None)
    max_ms: float | None = field(default=None)

    def __post_init__(self) -> None:
        if self.p50_ms is None and self.latency.count:
            object.__setattr__(self, "p50_ms", self.latency.percentile_ms(0.50))
            object.__setattr__(self, "p99_ms", self.latency.percentile_ms(0.99))
            object.__setattr__(self, "max_ms", self.latency.max_ms)

    @property
    def cpu_us_per_delivery(self) -> float | None:
        """All server CPU time (user + system, every process) over the deliveries counted,
        in microseconds: what one delivered message costs the server."""
        if self.server_cpu_s is None or not self.delivered or self.scenario == "idle":
            return None
        return self.server_cpu_s * 1e6 / self.delivered

    def to_json(self) -> dict[str, Any]:
        """The JSON line of this result (``--json``)."""
        latency = self.latency
        return {
            "scenario": self.scenario,
            "target": self.target,
            "run": self.run,
            "urls": list(self.urls),
            "subscribers": self.subscribers,
            "channels": self.channels,
            "publishers": self.publishers,
            "requested_rate_per_s": self.requested_rate_per_s,
            "published": self.published,
            "offered_per_s": _round(self.offered_per_s),
            "delivered": self.delivered,
            "expected": self.expected,
            "delivered_per_s": _round(self.delivered_per_s),
            "latency_ms": {
                "p50": _round(self.p50_ms, 3),
                "p90": _round(latency.percentile_ms(0.90), 3),
                "p99": _round(self.p99_ms, 3),
                "p999": _round(latency.percentile_ms(0.999), 3),
                "max": _round(self.max_ms, 3),
                "mean": _round(latency.mean_ms, 3),
                "samples": latency.count,
            },
            "lost": self.lost,
            "misrouted": self.misrouted,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "foreign": self.foreign,
            "closed_by_server": {str(code): n for code, n in sorted(self.closed_by_server.items())},
            "error_events": dict(sorted(self.error_events.items())),
            "presence_events": self.presence_events,
            "server_rss_per_conn_kb": _round(self.server_rss_per_conn_kb, 2),
            "server_rss_mb": _round(self.server_rss_mb, 1),
            "server_cpu_s": _round(self.server_cpu_s, 2),
            "server_cpu_us_per_delivery": _round(self.cpu_us_per_delivery, 2),
            "subscribe_s": _round(self.subscribe_s, 3),
            "publish_s": _round(self.publish_s, 3),
            "churn": _churn_json(self.churn),
            "vs_reference": _round(self.vs_reference, 3),
            "cpu_vs_reference": _round(self.cpu_vs_reference, 3),
            "notes": list(self.notes),
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _churn_json(churn: ChurnTally | None) -> dict[str, Any] | None:
    if churn is None:
        return None
    return {
        "connects": churn.connects,
        "disconnects": churn.disconnects,
        "failures": churn.failures,
        "first_failure": churn.first_failure,
        "closed_by_server": churn.closed_by_server,
        "delivered": churn.delivered,
        "duplicates": churn.duplicates,
        "misrouted": churn.misrouted,
        "connect_ms": {
            "p50": _round(churn.connect_latency.percentile_ms(0.5), 3),
            "p99": _round(churn.connect_latency.percentile_ms(0.99), 3),
            "max": _round(churn.connect_latency.max_ms, 3),
        },
    }


def merge_worker_results(
    plan: RunPlan,
    workers: Sequence[WorkerResult],
    published: Mapping[int, int],
    *,
    target: str,
    urls: tuple[str, ...],
    run: int,
    subscribe_s: float,
    memory: tuple[ServerSample | None, ServerSample | None] = (None, None),
    cpu: tuple[ServerSample | None, ServerSample | None] = (None, None),
    publishing: tuple[int | None, int | None] = (None, None),
    probe_note: str | None = None,
) -> RunResult:
    """The :class:`RunResult` of one run: what every load-generator process of
    ``plan`` reported (``workers``), summed, and the parent's own measurements.

    ``published`` is messages published by channel index, over all
    processes; ``target``, ``urls`` and ``run`` label the row. The parent's
    measurements: ``subscribe_s``, the time every connection took to get
    ``subscribed``; ``memory``, server samples before the connections opened
    and once they were open (idle: at the end of holding); ``cpu``, samples
    around publishing and draining; ``publishing``, the wall clock
    (``time.time_ns``) of the first publish and of the end of the last;
    ``probe_note``, why the server was not measured, if it was not. A
    ``None`` where a measurement is missing leaves its figures ``None``.

    How the figures follow (staying subscribers only, except where said):

    - ``delivered``: first deliveries of each message to each subscriber;
      ``expected``: subscribers of each channel times its published count;
      ``lost``: the shortfall, channel by channel;
    - ``misrouted`` and ``duplicates`` also count churning connections';
    - ``offered_per_s``: published over the publishing span;
      ``delivered_per_s``: delivered over the time from the first publish
      to the last delivery any process saw;
    - ``server_rss_per_conn_kb``: the server's memory growth over the
      plan's connections (subscribers and publishers), in KiB;
    - ``notes``: the probe's note, connections the server closed, error
      events, join and leave events, failed churn connections.
    """
    config = plan.config
    tallies = merge_tallies(w.tallies for w in workers)
    latency = LatencyHistogram()
    churn = ChurnTally()
    closed: dict[int, int] = {}
    errors: dict[str, int] = {}
    for worker in workers:
        latency.merge(worker.latency)
        churn.add(worker.churn)
        for code, count in worker.closed_by_server.items():
            closed[code] = closed.get(code, 0) + count
        for name, count in worker.error_events.items():
            errors[name] = errors.get(name, 0) + count
    delivered = sum(t.distinct for t in tallies.values())
    expected = sum(t.subscribers * published.get(c, 0) for c, t in tallies.items())
    total_published = sum(published.values())

    started_ns, finished_ns = publishing
    offered = None
    if started_ns is not None and finished_ns is not None and finished_ns > started_ns:
        offered = total_published / ((finished_ns - started_ns) / 1e9)
    last_ns = max((w.last_delivery_ns for w in workers), default=0)
    delivered_per_s = None
    if started_ns is not None and last_ns > started_ns and delivered:
        delivered_per_s = delivered / ((last_ns - started_ns) / 1e9)

    before, after = memory
    rss_per_conn = rss_mb = None
    if before is not None and after is not None:
        rss_per_conn = (after.rss_bytes - before.rss_bytes) / plan.connections / 1024
        rss_mb = after.rss_bytes / 2**20
    cpu_start, cpu_end = cpu
    cpu_s = None
    if cpu_start is not None and cpu_end is not None:
        cpu_s = cpu_end.cpu_s - cpu_start.cpu_s

    notes = []
    if probe_note:
        notes.append(probe_note)
    if closed:
        codes = ", ".join(f"{code}x{count}" for code, count in sorted(closed.items()))
        notes.append(
            f"the server closed {sum(closed.values())} subscribers during the run ({codes})"
        )
    if errors:
        named = ", ".join(f"{name}x{count}" for name, count in sorted(errors.items()))
        notes.append(f"subscribers received error events: {named}")
    presence = sum(w.presence_events for w in workers)
    if presence:
        notes.append(
            f"{presence} join/leave events received: the server announces joins on the "
            "bench's channels (serve --quiet-namespaces bench to measure messages alone)"
        )
    if churn.failures:
        notes.append(f"{churn.failures} churn connections failed; first: {churn.first_failure}")

    return RunResult(
        scenario=config.scenario.value,
        target=target,
        run=run,
        urls=urls,
        subscribers=config.subscribers,
        channels=config.channels,
        publishers=plan.publishers,
        requested_rate_per_s=config.rate_per_s,
        published=total_published,
        offered_per_s=offered,
        delivered=delivered,
        expected=expected,
        delivered_per_s=delivered_per_s,
        latency=latency,
        lost=count_lost(published, tallies),
        misrouted=sum(t.misrouted for t in tallies.values()) + churn.misrouted,
        duplicates=sum(t.duplicates for t in tallies.values()) + churn.duplicates,
        reordered=sum(t.reordered for t in tallies.values()),
        foreign=sum(t.foreign for t in tallies.values()),
        closed_by_server=closed,
        error_events=errors,
        presence_events=presence,
        server_rss_per_conn_kb=rss_per_conn,
        server_rss_mb=rss_mb,
        server_cpu_s=cpu_s,
        subscribe_s=subscribe_s,
        publish_s=(finished_ns - started_ns) / 1e9 if started_ns and finished_ns else None,
        churn=churn if config.scenario is Scenario.CHURN else None,
        notes=tuple(notes),
    )


def headline(result: RunResult) -> float | None:
    """The figure compared across targets: delivered/s, or for ``idle`` the
    server memory per connection."""
    if result.scenario == "idle":
        return result.server_rss_per_conn_kb
    return result.delivered_per_s


def with_ratio(result: RunResult, reference: RunResult) -> RunResult:
    """``result`` with :attr:`~RunResult.vs_reference` set from ``reference``."""
    ours, theirs = headline(result), headline(reference)
    ratio = ours / theirs if ours is not None and theirs else None
    our_cpu, their_cpu = result.cpu_us_per_delivery, reference.cpu_us_per_delivery
    cpu_ratio = our_cpu / their_cpu if our_cpu is not None and their_cpu else None
    return dataclasses.replace(result, vs_reference=ratio, cpu_vs_reference=cpu_ratio)


def _median_int(values: Sequence[int]) -> int:
    value = median(float(v) for v in values)
    return round(value) if value is not None else 0


def median_result(results: Sequence[RunResult]) -> RunResult:
    """One row of medians over repeated runs of the same scenario and target.

    Every figure is the median of that figure (so the p99 shown is the
    median of the runs' p99s), except the correctness counts (lost,
    misrouted, duplicates, reordered, foreign), which are the worst run's: a
    median would show runs that lost (0, 0, 5) as "0 lost". The latency
    histogram is the runs' merged.
    """
    if not results:
        raise ValueError("no result to take the median of")
    first = results[0]
    latency = LatencyHistogram()
    for result in results:
        latency.merge(result.latency)
    closed: dict[int, int] = {}
    for result in results:
        for code, count in result.closed_by_server.items():
            closed[code] = closed.get(code, 0) + count
    notes = tuple(dict.fromkeys(note for result in results for note in result.notes))
    return dataclasses.replace(
        first,
        run="median",
        published=_median_int([r.published for r in results]),
        offered_per_s=median(r.offered_per_s for r in results),
        delivered=_median_int([r.delivered for r in results]),
        expected=_median_int([r.expected for r in results]),
        delivered_per_s=median(r.delivered_per_s for r in results),
        latency=latency,
        lost=max(r.lost for r in results),
        misrouted=max(r.misrouted for r in results),
        duplicates=max(r.duplicates for r in results),
        reordered=max(r.reordered for r in results),
        foreign=max(r.foreign for r in results),
        closed_by_server=closed,
        presence_events=_median_int([r.presence_events for r in results]),
        server_rss_per_conn_kb=median(r.server_rss_per_conn_kb for r in results),
        server_rss_mb=median(r.server_rss_mb for r in results),
        server_cpu_s=median(r.server_cpu_s for r in results),
        subscribe_s=median(r.subscribe_s for r in results) or 0.0,
        publish_s=median(r.publish_s for r in results),
        churn=None,
        notes=notes,
        vs_reference=median(r.vs_reference for r in results),
        cpu_vs_reference=median(r.cpu_vs_reference for r in results),
        p50_ms=median(r.p50_ms for r in results),
        p99_ms=median(r.p99_ms for r in results),
        max_ms=median(r.max_ms for r in results),
    )
