"""One run of a scenario against one target, driven from the parent process.

The phases, each bounded by the invocation's :class:`~.limits.Deadline`:

1. start one load-generator process per :class:`~.scenarios.WorkerPlan`;
2. wait until every connection has opened and got ``subscribed``
   (the subscribe time), sample the server's memory;
3. ``idle``: hold the connections ``--duration`` seconds, sample memory again;
   otherwise: tell every process to publish, wait until every publisher is
   done, then wait ``--drain`` seconds for late deliveries;
4. tell every process to stop, with the published counts; merge what they
   report into a :class:`~.results.RunResult`
   (:func:`~.results.merge_worker_results`).

Worker processes are started with the ``spawn`` method (no state inherited
from the parent by accident) and always reaped, also on errors and Ctrl-C.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from .clients import worker_main
from .errors import BenchError
from .ipc import (
    Connected,
    Drain,
    Failed,
    Go,
    Progress,
    ProgressSlots,
    Published,
    Stop,
    WorkerResult,
)
from .limits import Deadline
from .probe import ServerProbe
from .report import ProgressLine
from .results import RunResult, merge_worker_results
from .scenarios import RunPlan, Scenario

__all__ = ["Target", "run_once"]

#: Seconds to let the server settle before sampling its memory.
_SETTLE_S = 0.5
#: Seconds a worker has to exit after reporting, before it is terminated.
_REAP_S = 10.0


@dataclass(frozen=True, slots=True)
class Target:
    """What a run connects to."""

    #: Short name in the report ("feeds(2)", "reference", "sink (ceiling)", ...).
    label: str
    urls: tuple[str, ...]
    #: The server's process IDs, for memory and CPU (empty: unknown).
    pids: tuple[int, ...] = ()


@dataclass(slots=True)
class _Handle:
    """The parent's view of one worker process."""

    index: int
    process: BaseProcess
    conn: Connection
    progress: Progress | None = None
    connected: Connected | None = None
    published: Published | None = None
    result: WorkerResult | None = None
    #: Set when the pipe reached end of file (the process is exiting).
    eof: bool = field(default=False)


def run_once(
    plan: RunPlan, target: Target, run: int, deadline: Deadline, progress: ProgressLine
) -> RunResult:
    """Execute ``plan`` against ``target``; raise :class:`BenchError` when it cannot."""
    config = plan.config
    context = multiprocessing.get_context("spawn")
    shared = context.RawArray(
        ctypes.c_int64, ProgressSlots.size(len(plan.workers), len(plan.channels))
    )
    ProgressSlots(shared, len(plan.workers), len(plan.channels)).clear()
    probe = ServerProbe(target.pids)
    before = probe.sample()
    handles: list[_Handle] = []
    progress.begin(f"{config.scenario.value} → {target.label} (run {run})", plan.connections)
    finished = False
    try:
        for worker in plan.workers:
            ours, theirs = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(worker, theirs, shared),
                name=f"sanic-feeds-bench-{worker.index}",
                daemon=True,
            )
            process.start()
            theirs.close()
            handles.append(_Handle(worker.index, process, ours))
        progress.phase("subscribing")
        _pump(handles, lambda: all(h.connected for h in handles), "subscribing", deadline, progress)
        connected = [h.connected for h in handles if h.connected is not None]
        failed = sum(c.failed for c in connected)
        if failed:
            first = next(c.first_error for c in connected if c.first_error)
            raise BenchError(
                f"{failed} of {plan.connections} connections failed to open; first: {first}"
            )
        subscribe_s = (
            max(c.finished_ns for c in connected) - min(c.started_ns for c in connected)
        ) / 1e9
        _pause(handles, _SETTLE_S, "settling", deadline, progress)
        subscribed = probe.sample()

        published: dict[int, int] = {}
        if config.scenario is Scenario.IDLE:
            progress.phase("holding")
            _pause(handles, config.duration_s, "holding idle connections", deadline, progress)
            subscribed = probe.sample()
            cpu_start = subscribed
            publish_started_ns = publish_finished_ns = None
        else:
            cpu_start = probe.sample()
            for handle in handles:
                handle.conn.send(Go())
            progress.phase("publishing")
            _pump(
                handles, lambda: all(h.published for h in handles), "publishing", deadline, progress
            )
            reports = [h.published for h in handles if h.published is not None]
            for report in reports:
                for channel, count in report.counts.items():
                    published[channel] = published.get(channel, 0) + count
            starts = [r.started_ns for r in reports if r.started_ns is not None]
            ends = [r.finished_ns for r in reports if r.finished_ns is not None]
            publish_started_ns = min(starts) if starts else None
            publish_finished_ns = max(ends) if ends else None
            for handle in handles:
                handle.conn.send(Drain())
            progress.phase("draining")
            _pause(handles, config.drain_s, "draining", deadline, progress)
        cpu_end = probe.sample()

        for handle in handles:
            handle.conn.send(Stop(published))
        progress.phase("collecting")
        _pump(
            handles,
            lambda: all(h.result for h in handles),
            "collecting results",
            deadline,
            progress,
        )
        finished = True
    finally:
        _reap(handles, patient=finished)
        progress.clear()

    results = [h.result for h in handles if h.result is not None]
    return merge_worker_results(
        plan,
        results,
        published,
        target=target.label,
        urls=target.urls,
        run=run,
        subscribe_s=subscribe_s,
        memory=(before, subscribed),
        cpu=(cpu_start, cpu_end),
        publishing=(publish_started_ns, publish_finished_ns),
        probe_note=probe.unavailable,
    )


def _pump(
    handles: list[_Handle],
    done: Callable[[], bool],
    phase: str,
    deadline: Deadline,
    progress: ProgressLine,
) -> None:
    """Receive worker messages until ``done()``; fail on a worker's failure or death."""
    while not done():
        deadline.check(phase)
        conns = [h.conn for h in handles if not h.eof]
        ready = wait(conns, timeout=min(0.2, max(0.01, deadline.remaining_s())))
        for handle in handles:
            if handle.conn in ready:
                _receive(handle)
        for handle in handles:
            if handle.eof and not handle.process.is_alive() and not _has_what(handle, phase):
                raise BenchError(
                    f"load generator process {handle.index} exited "
                    f"(status {handle.process.exitcode}) while {phase}"
                )
        _show(handles, phase, progress)


def _pause(
    handles: list[_Handle], seconds: float, phase: str, deadline: Deadline, progress: ProgressLine
) -> None:
    """Keep receiving progress for ``seconds``."""
    until = time.monotonic() + seconds
    _pump(handles, lambda: time.monotonic() >= until, phase, deadline, progress)


def _has_what(handle: _Handle, phase: str) -> bool:
    if phase == "collecting results":
        return handle.result is not None
    if phase == "subscribing":
        return handle.connected is not None
    if phase == "publishing":
        return handle.published is not None
    return False


def _receive(handle: _Handle) -> None:
    try:
        while handle.conn.poll():
            message = handle.conn.recv()
            if isinstance(message, Failed):
                raise BenchError(message.message)
            if isinstance(message, Progress):
                handle.progress = message
            elif isinstance(message, Connected):
                handle.connected = message
            elif isinstance(message, Published):
                handle.published = message
            elif isinstance(message, WorkerResult):
                handle.result = message
            else:
                raise TypeError(f"unexpected message from a worker: {message!r}")
    except (EOFError, OSError):
        handle.eof = True


def _show(handles: list[_Handle], phase: str, progress: ProgressLine) -> None:
    reports = [h.progress for h in handles if h.progress is not None]
    progress.update(
        phase=phase,
        connected=sum(p.connected for p in reports),
        published=sum(p.published for p in reports),
        delivered=sum(p.delivered for p in reports),
        closed=sum(p.closed for p in reports),
    )


def _reap(handles: list[_Handle], *, patient: bool) -> None:
    """Wait for every worker to exit (when ``patient``: they were told to stop
    and are closing their connections); terminate, then kill, the others."""
    give_up_at = time.monotonic() + (_REAP_S if patient else 0.0)
    for handle in handles:
        handle.process.join(max(0.0, give_up_at - time.monotonic()))
        if handle.process.is_alive():
            handle.process.terminate()
            handle.process.join(2.0)
        if handle.process.is_alive():
            handle.process.kill()
            handle.process.join()
        handle.conn.close()
