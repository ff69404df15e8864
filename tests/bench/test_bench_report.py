"""Results, medians, ratios and their rendering (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from sanic_feeds.bench.report import format_table, json_lines
from sanic_feeds.bench.results import RunResult, median_result, with_ratio
from sanic_feeds.bench.stats import LatencyHistogram


def result(run: int | str = 1, **changes: Any) -> RunResult:
    latency = LatencyHistogram()
    for ms in (1, 2, 3):
        latency.record(ms * 1_000_000)
    values: dict[str, Any] = {
        "scenario": "fanout",
        "target": "feeds",
        "run": run,
        "urls": ("ws://127.0.0.1:1",),
        "subscribers": 10,
        "channels": 1,
        "publishers": 1,
        "requested_rate_per_s": 100.0,
        "published": 100,
        "offered_per_s": 100.0,
        "delivered": 1000,
        "expected": 1000,
        "delivered_per_s": 1000.0,
        "latency": latency,
        "lost": 0,
        "misrouted": 0,
        "duplicates": 0,
        "reordered": 0,
        "foreign": 0,
        "closed_by_server": {},
        "error_events": {},
        "presence_events": 0,
        "server_rss_per_conn_kb": 12.5,
        "server_rss_mb": 40.0,
        "server_cpu_s": 1.5,
        "subscribe_s": 0.5,
        "publish_s": 1.0,
    }
    values.update(changes)
    return RunResult(**values)


def test_percentiles_come_from_the_histogram() -> None:
    row = result()
    assert row.p50_ms is not None and 1.9 < row.p50_ms < 2.1
    assert row.max_ms == 3.0


def test_medians_of_repeated_runs() -> None:
    rows = [
        result(1, delivered_per_s=900.0, lost=0),
        result(2, delivered_per_s=1500.0, lost=4),
        result(3, delivered_per_s=1000.0, lost=1, closed_by_server={1013: 2}),
    ]
    middle = median_result(rows)
    assert middle.run == "median"
    assert middle.delivered_per_s == 1000.0
    assert middle.lost == 4  # the worst run's: a median would hide a run that lost
    assert middle.closed_by_server == {1013: 2}
    assert middle.latency.count == 9


def test_ratio_to_the_reference_is_of_delivered_per_second() -> None:
    ours = with_ratio(result(delivered_per_s=500.0), result(delivered_per_s=2000.0))
    assert ours.vs_reference == 0.25
    assert with_ratio(result(), result(delivered_per_s=None)).vs_reference is None


def test_idle_ratio_is_of_memory_per_connection() -> None:
    ours = result(scenario="idle", server_rss_per_conn_kb=30.0)
    theirs = result(scenario="idle", server_rss_per_conn_kb=10.0)
    assert with_ratio(ours, theirs).vs_reference == 3.0


def test_cpu_per_delivery_is_all_server_cpu_over_the_deliveries() -> None:
    row = result(server_cpu_s=1.5, delivered=100_000)
    assert row.cpu_us_per_delivery == 15.0
    assert result(server_cpu_s=None).cpu_us_per_delivery is None
    assert result(delivered=0).cpu_us_per_delivery is None
    assert result(scenario="idle").cpu_us_per_delivery is None
    table = format_table([row])
    assert "us/deliv" in table.splitlines()[0] and "15.0" in table
    assert orjson.loads(json_lines([row]))["server_cpu_us_per_delivery"] == 15.0


def test_cpu_ratio_to_the_reference_is_per_delivery() -> None:
    ours = result(server_cpu_s=3.0, delivered=200_000)  # 15 us per delivery
    theirs = result(server_cpu_s=1.0, delivered=100_000)  # 10 us per delivery
    compared = with_ratio(ours, theirs)
    assert compared.cpu_vs_reference == 1.5
    assert "1.50x" in format_table([compared])
    assert with_ratio(ours, result(server_cpu_s=None)).cpu_vs_reference is None
    runs = [
        dataclasses.replace(compared, run=n, cpu_vs_reference=v)
        for n, v in enumerate((1.2, 1.5, 1.1))
    ]
    assert median_result(runs).cpu_vs_reference == 1.2


def test_table_has_a_row_per_result_and_the_notes_once() -> None:
    rows = [result(1, notes=("psutil is missing",)), result(2, notes=("psutil is missing",))]
    table = format_table(rows).splitlines()
    assert table[0].split()[:3] == ["scenario", "target", "run"]
    assert "vs ref" not in table[0]
    assert len(table) == 2 + 2 + 1
    assert table[-1] == "note: psutil is missing"


def test_table_shows_the_ratio_column_when_there_is_one() -> None:
    table = format_table([dataclasses.replace(result(), vs_reference=0.5)])
    assert "vs ref" in table.splitlines()[0]
    assert "0.50x" in table


def test_json_lines_are_one_object_per_result() -> None:
    lines = json_lines([result(1), result(2, lost=3)]).splitlines()
    decoded = [orjson.loads(line) for line in lines]
    assert [d["run"] for d in decoded] == [1, 2]
    assert decoded[1]["lost"] == 3
    assert decoded[0]["latency_ms"]["samples"] == 3
    assert set(decoded[0]) >= {
        "scenario", "target", "subscribers", "offered_per_s", "delivered_per_s", "lost",
        "misrouted", "duplicates", "server_rss_per_conn_kb", "server_cpu_s", "subscribe_s",
    }  # fmt: skip
