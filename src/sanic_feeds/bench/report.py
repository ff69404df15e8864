"""What the bench shows: the progress line, the table, JSON lines, the plot.

The progress line goes to stderr, updated in place when stderr is a
terminal (one line per phase otherwise, so logs stay readable). Results go
to stdout, as a table or (``--json``) as one JSON object per line.
matplotlib is imported only when a plot is asked for.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import orjson

from .errors import BenchError
from .results import RunResult
from .stats import LatencyHistogram

__all__ = ["ProgressLine", "format_table", "json_lines", "write_plot"]

#: Seconds between redraws of the progress line.
_REDRAW_S = 0.25

_COLUMNS = (
    "scenario",
    "target",
    "run",
    "subs",
    "offered/s",
    "delivered/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "lost",
    "misrouted",
    "dups",
    "RSS/conn KB",
    "srv CPU s",
    "us/deliv",
    "subscribe s",
    "vs ref",
    "CPU vs ref",
)


class ProgressLine:
    """One status line on ``stream`` while a run goes on."""

    def __init__(self, stream: TextIO = sys.stderr, *, enabled: bool = True) -> None:
        self._stream = stream
        self._enabled = enabled
        self._in_place = enabled and stream.isatty()
        self._label = ""
        self._connections = 0
        self._phase = ""
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._width = 0

    def begin(self, label: str, connections: int) -> None:
        self._label, self._connections = label, connections
        self._started = time.monotonic()

    def phase(self, name: str) -> None:
        self._phase = name
        if self._enabled and not self._in_place:
            elapsed = time.monotonic() - self._started
            print(f"[{elapsed:6.1f}s] {self._label}: {name}", file=self._stream, flush=True)

    def update(
        self, *, phase: str, connected: int, published: int, delivered: int, closed: int
    ) -> None:
        now = time.monotonic()
        if not self._in_place or now - self._drawn_at < _REDRAW_S:
            return
        self._drawn_at = now
        elapsed = now - self._started
        text = (
            f"[{elapsed:6.1f}s] {self._label}: {phase} | connected {connected}/{self._connections}"
            f" | published {published:,} | delivered {delivered:,}"
            + (f" | closed by server {closed}" if closed else "")
        )
        padding = " " * max(0, self._width - len(text))
        self._width = len(text)
        self._stream.write("\r" + text + padding)
        self._stream.flush()

    def clear(self) -> None:
        if self._in_place and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0

    def message(self, text: str) -> None:
        """A line of its own (such as "starting 2 servers"), above the progress line."""
        if self._enabled:
            self.clear()
            print(text, file=self._stream, flush=True)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row(result: RunResult) -> tuple[str, ...]:
    publishes = result.scenario != "idle"
    return (
        result.scenario,
        result.target,
        str(result.run),
        str(result.subscribers),
        _number(result.offered_per_s),
        _number(result.delivered_per_s),
        _ms(result.p50_ms),
        _ms(result.p99_ms),
        _ms(result.max_ms),
        str(result.lost) if publishes else "-",
        str(result.misrouted) if publishes else "-",
        str(result.duplicates) if publishes else "-",
        _fixed(result.server_rss_per_conn_kb, 1),
        _fixed(result.server_cpu_s, 2),
        _fixed(result.cpu_us_per_delivery, 1),
        _fixed(result.subscribe_s, 2),
        _ratio(result.vs_reference),
        _ratio(result.cpu_vs_reference),
    )


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(results: Sequence[RunResult]) -> str:
    """An aligned text table of ``results``, then their notes and a legend."""
    compared = any(result.vs_reference is not None for result in results)
    columns = _COLUMNS if compared else _COLUMNS[:-2]
    rows = [columns, *(_row(result)[: len(columns)] for result in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i < 3 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    notes = dict.fromkeys(note for result in results for note in result.notes)
    lines += [f"note: {note}" for note in notes]
    if compared:
        lines.append(
            "vs ref: delivered/s as a multiple of the reference's (the reference server, or "
            "the --baseline-arg instances) in the same invocation (idle: RSS per connection "
            "as a multiple of the reference's); CPU vs ref: server CPU per delivery "
            "(us/deliv: all server CPU time over the deliveries) as a multiple of the "
            "reference's"
        )
    return "\n".join(lines)


def json_lines(results: Sequence[RunResult]) -> str:
    """One JSON object per result, one per line."""
    return "\n".join(orjson.dumps(result.to_json()).decode() for result in results)


def write_plot(path: Path, series: Mapping[str, LatencyHistogram], title: str) -> None:
    """Write a latency histogram per target (log-scaled milliseconds) as an image."""
    try:
        import matplotlib
    except ImportError:
        # The command line checks this before the run; here for other callers.
        raise BenchError("--plot needs matplotlib: pip install 'sanic-feeds[bench]'") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(9, 5))
    try:
        for label, histogram in series.items():
            edges, counts = histogram.span_ms()
            if not counts:
                continue
            total = histogram.count
            shares = [100.0 * count / total for count in counts]
            axes.stairs(shares, edges, label=f"{label} (n={total:,})")
        axes.set_xscale("log")
        axes.set_xlabel("end-to-end latency (ms)")
        axes.set_ylabel("% of deliveries per bucket")
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        if axes.has_data():
            axes.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
    except OSError as exc:
        raise BenchError(f"cannot write the plot to {path}: {exc}") from None
    finally:
        pyplot.close(figure)
