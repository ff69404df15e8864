"""The drills' planning, results and report, and the command's options (no sockets)."""

from __future__ import annotations

import argparse

import orjson
import pytest

from sanic_feeds.cli import build_parser, main
from sanic_feeds.drill.ledger import ClientTally, RawTally
from sanic_feeds.drill.plan import ClientKind, ClientMix, Drill, DrillConfig, Publishing, Timeline
from sanic_feeds.drill.report import format_table, json_lines
from sanic_feeds.drill.results import DrillResult


def test_the_mix_is_a_third_of_each_kind() -> None:
    assert ClientMix.of(300) == ClientMix(raw=100, json=100, ws=100)
    assert ClientMix.of(100) == ClientMix(raw=33, json=33, ws=34)
    config = DrillConfig(clients=30, slow_clients=5)
    assert config.mix(Drill.SLOW_CLIENTS).count(ClientKind.SLOW) == 5
    assert config.mix(Drill.DRAIN).slow == 0
    assert not ClientKind.RAW.has_offsets and ClientKind.SLOW.has_offsets


def test_which_drills_need_a_redis_of_their_own() -> None:
    own = {drill for drill in Drill if drill.needs_own_redis}
    assert own == {
        Drill.REDIS_RESTART_AOF,
        Drill.REDIS_RESTART,
        Drill.PUBLISHER_REDIS_RESTART,
        Drill.OUTPUT_BUFFER,
    }
    assert {drill for drill in Drill if drill.appendonly} == {
        Drill.REDIS_RESTART_AOF,
        Drill.PUBLISHER_REDIS_RESTART,
    }
    assert [d for d in Drill if d.publishing is Publishing.PUBLISHER] == [
        Drill.PUBLISHER_REDIS_RESTART
    ]


def test_the_fault_comes_a_quarter_in_and_publishing_outlasts_it() -> None:
    config = DrillConfig(duration_s=10, fault_for_s=8, redis_down_s=1)
    assert Timeline.of(Drill.PUBSUB_KILL, config) == Timeline(2.5, None, 10)
    assert Timeline.of(Drill.REDIS_RESTART, config) == Timeline(2.5, 3.5, 10)
    # Back at 10.5 s: publishing goes on for a quarter of the duration after that.
    assert Timeline.of(Drill.INSTANCE_STOP, config) == Timeline(2.5, 10.5, 13)
    short = DrillConfig(duration_s=3, fault_for_s=1)
    assert Timeline.of(Drill.DRAIN, short) == Timeline(0.75, 1.75, 3)


def test_the_servers_get_the_history_size_and_the_extra_arguments() -> None:
    config = DrillConfig(history_size=1000, server_args=("--recovery-max=1000",))
    assert config.server_arguments() == ("--history-size", "1000", "--recovery-max=1000")
    assert DrillConfig().server_arguments() == ()
    with pytest.raises(ValueError):
        DrillConfig(clients=2)
    with pytest.raises(ValueError):
        DrillConfig(fault_for_s=-1)


def result(**fields: object) -> DrillResult:
    tally = ClientTally(clients=10, delivered=3000)
    values: dict[str, object] = {
        "drill": "drain",
        "run": 1,
        "published": 300,
        "offsets": 300,
        "epochs": 1,
        "offset_clients": {"json": tally, "ws": tally},
        "raw": RawTally(clients=10, delivered=2990, missed=10),
        "ready_transitions": 2,
        "ready_events": ((0.1, 0, False), (3.2, 0, True)),
        "notes": ("instance 0 exited 0.50 s after SIGTERM",),
    }
    values.update(fields)
    return DrillResult(**values)  # type: ignore[arg-type]


def test_a_result_sums_its_clients_and_breaks_only_on_the_guarantee() -> None:
    clean = result()
    assert clean.guarantee.delivered == 6000
    assert not clean.broken  # raw clients' misses are allowed
    lossy = result(offset_clients={"json": ClientTally(delivered=5, lost=1)})
    assert lossy.broken
    line = orjson.loads(json_lines([clean, lossy]).splitlines()[1])
    assert (line["lost"], line["broken"], line["by_kind"]["json"]["lost"]) == (1, True, 1)
    assert line["ready_events"][0] == {"at_s": 0.1, "instance": 0, "ready": False}


def test_the_table_has_a_row_per_run_notes_and_skips() -> None:
    table = format_table([result(), DrillResult("redis-restart", 1, skipped="needs its Redis")])
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["drill", "run", "published"]
    row = lines[2].split()
    assert row[:4] == ["drain", "1", "300", "6,000"]
    assert lines[3].split()[:3] == ["redis-restart", "1", "skipped:"]
    assert lines[2].index(" 1 ") == lines[3].index(" 1 ")  # the columns line up
    assert "note: drain run 1: instance 0 exited 0.50 s after SIGTERM" in lines


def parse(*argv: str) -> argparse.Namespace:
    return build_parser(with_drill=True).parse_args(["drill", *argv])


def test_the_options_and_their_defaults() -> None:
    args = parse()
    assert (args.instances, args.clients, args.rate, args.duration) == (3, 300, 100.0, 10.0)
    assert args.drill == [] and args.repeat == 1 and args.redis is None
    args = parse("--drill", "drain", "--drill", "instance-kill", "--server-arg=--max-queue=5")
    assert args.drill == ["drain", "instance-kill"]
    assert args.server_arg == ["--max-queue=5"]
    with pytest.raises(SystemExit):
        parse("--drill", "nonsense")


def test_the_other_commands_do_not_declare_the_drills_options() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["drill", "--clients", "3"])


def test_too_few_clients_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drill", "--clients", "2"]) == 2
    assert "at least 3" in capsys.readouterr().err


def test_with_a_given_redis_the_drills_that_crash_it_are_skipped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Nothing is started: both drills need a Redis of their own.
    status = main(
        ["drill", "--redis", "redis://127.0.0.1:1/0", "--drill", "redis-restart",
         "--drill", "output-buffer", "--json", "--quiet"]
    )  # fmt: skip
    assert status == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["drill"], line["skipped"] is not None) for line in lines] == [
        ("redis-restart", True),
        ("output-buffer", True),
    ]
