"""What the drill shows: a table (one row per drill and run) and JSON lines."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from .results import DrillResult

__all__ = ["LEGEND", "format_table", "json_lines"]

_COLUMNS = (
    "drill",
    "run",
    "published",
    "delivered",
    "lost",
    "dups",
    "ooo",
    "rec false",
    "excused",
    "new-epoch",
    "max delay s",
    "ready chg",
    "raw deliv",
    "raw missed",
)

LEGEND = """\
lost, dups, ooo: JSON /feed and /ws clients' losses no recovered:false explains,
duplicates and out-of-order deliveries (the guarantee: all three must be 0).
rec false: subscribed with recovered:false after a reconnect. excused: messages
such a recovered:false excused; new-epoch: of those, messages of the new epoch
before the client's new start. max delay s: longest publish-to-delivery time
of a delivery from the fault on. ready chg: /ready transitions of any instance.
raw: /feed?format=raw clients, at-most-once across reconnects (not a loss of the
guarantee)."""


def _row(result: DrillResult) -> tuple[str, ...]:
    if result.skipped is not None:
        return (result.drill, str(result.run), f"skipped: {result.skipped}")
    tally = result.guarantee
    return (
        result.drill,
        str(result.run),
        f"{result.published:,}",
        f"{tally.delivered:,}",
        str(tally.lost),
        str(tally.duplicates),
        str(tally.out_of_order),
        str(tally.recovered_false),
        f"{tally.excused:,}",
        f"{tally.excused_new_epoch:,}",
        f"{tally.max_delay_after_s:.2f}",
        str(result.ready_transitions),
        f"{result.raw.delivered:,}",
        f"{result.raw.missed:,}",
    )


def format_table(results: Sequence[DrillResult], *, legend: bool = True) -> str:
    """An aligned table of ``results``, their notes, and (``legend``) what the columns mean."""
    rows = [_COLUMNS, *(_row(result) for result in results)]
    full = [row for row in rows if len(row) == len(_COLUMNS)]
    widths = [max(len(row[i]) for row in full) for i in range(len(_COLUMNS))]
    # A skipped row's drill and run line up with the others too.
    widths[:2] = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = []
    for number, row in enumerate(rows):
        if len(row) < len(_COLUMNS):
            lines.append("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), *row[2:]]))
            continue
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    for result in results:
        lines += [f"note: {result.drill} run {result.run}: {note}" for note in result.notes]
    if legend:
        lines += ["", LEGEND]
    return "\n".join(lines)


def json_lines(results: Sequence[DrillResult]) -> str:
    """One JSON object per result, one per line."""
    return "\n".join(orjson.dumps(result.to_json()).decode() for result in results)
