"""The bench counts loss, misrouting and duplicates exactly, against real servers.

The faulty server (``faulty_server.py``) breaks every K-th message of each
channel in a known way, and each run publishes an exact number of messages
per channel (``--messages``), so every count is known in advance. Nothing
here asserts a timing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sanic_feeds.bench.spawn import free_port

StartServer = Callable[..., str]
RunBench = Callable[..., tuple[int, list[dict[str, Any]]]]

pytestmark = pytest.mark.integration


def test_reference_fanout_delivers_everything_once(
    start_server: StartServer, bench: RunBench, tmp_path: Path
) -> None:
    url = start_server("reference")
    plot = tmp_path / "latency.png"
    status, [result] = bench(
        "fanout", "--url", url, "--subscribers", "6", "--messages", "40", "--rate", "400",
        "--plot", str(plot),
    )  # fmt: skip
    assert status == 0
    assert result["published"] == 40
    assert result["delivered"] == result["expected"] == 40 * 6
    assert (result["lost"], result["misrouted"], result["duplicates"]) == (0, 0, 0)
    assert result["latency_ms"]["samples"] == 40 * 6
    assert plot.stat().st_size > 0


def test_reference_rooms_delivers_everything_once(
    start_server: StartServer, bench: RunBench
) -> None:
    url = start_server("reference")
    status, [result] = bench(
        "rooms", "--url", url, "--channels", "3", "--subscribers-per-channel", "2",
        "--messages", "20", "--rate", "300",
    )  # fmt: skip
    assert status == 0
    assert result["published"] == 3 * 20
    assert result["delivered"] == result["published"] * 2
    assert (result["lost"], result["misrouted"], result["duplicates"]) == (0, 0, 0)


def test_max_rate_publishes_everything_paced(start_server: StartServer, bench: RunBench) -> None:
    url = start_server("reference")
    status, [result] = bench(
        "fanout", "--url", url, "--subscribers", "4", "--messages", "300", "--rate", "max",
        "--window", "5",
    )  # fmt: skip
    assert status == 0
    assert result["requested_rate_per_s"] is None
    assert result["delivered"] == 300 * 4
    assert (result["lost"], result["misrouted"], result["duplicates"]) == (0, 0, 0)


def test_dropped_messages_count_as_lost(start_server: StartServer, bench: RunBench) -> None:
    url = start_server("faulty", "--drop-every", "7")
    status, [result] = bench(
        "fanout", "--url", url, "--subscribers", "5", "--messages", "40", "--rate", "400"
    )
    assert status == 0
    dropped = 40 // 7
    assert result["lost"] == dropped * 5
    assert result["delivered"] == (40 - dropped) * 5
    assert (result["misrouted"], result["duplicates"]) == (0, 0)


def test_duplicated_messages_are_counted(start_server: StartServer, bench: RunBench) -> None:
    url = start_server("faulty", "--duplicate-every", "4")
    status, [result] = bench(
        "fanout", "--url", url, "--subscribers", "5", "--messages", "40", "--rate", "400"
    )
    assert status == 0
    assert result["duplicates"] == (40 // 4) * 5
    assert result["delivered"] == 40 * 5
    assert (result["lost"], result["misrouted"]) == (0, 0)


def test_misrouted_messages_are_counted(start_server: StartServer, bench: RunBench) -> None:
    url = start_server("faulty", "--misroute-every", "5")
    status, [result] = bench(
        "rooms", "--url", url, "--channels", "3", "--subscribers-per-channel", "2",
        "--messages", "20", "--rate", "300",
    )  # fmt: skip
    assert status == 0
    # Each channel's every 5th message also reaches the 2 subscribers of each other channel.
    assert result["misrouted"] == 3 * (20 // 5) * (3 - 1) * 2
    assert result["delivered"] == 3 * 20 * 2
    assert (result["lost"], result["duplicates"]) == (0, 0)


def test_all_faults_at_once_are_told_apart(start_server: StartServer, bench: RunBench) -> None:
    url = start_server(
        "faulty", "--drop-every", "6", "--duplicate-every", "4", "--misroute-every", "5"
    )
    status, [result] = bench(
        "rooms", "--url", url, "--channels", "2", "--subscribers-per-channel", "3",
        "--messages", "30", "--rate", "300",
    )  # fmt: skip
    assert status == 0
    offsets = range(1, 31)
    dropped = [n for n in offsets if n % 6 == 0]
    # A dropped message is sent to nobody: neither duplicated nor misrouted.
    duplicated = [n for n in offsets if n % 4 == 0 and n % 6]
    misrouted = [n for n in offsets if n % 5 == 0 and n % 6]
    assert result["lost"] == 2 * len(dropped) * 3
    assert result["duplicates"] == 2 * len(duplicated) * 3
    assert result["misrouted"] == 2 * len(misrouted) * 3
    assert result["delivered"] == 2 * (30 - len(dropped)) * 3


def test_strict_fails_a_run_that_lost_messages(start_server: StartServer, bench: RunBench) -> None:
    url = start_server("faulty", "--drop-every", "3")
    status, [result] = bench(
        "fanout", "--url", url, "--subscribers", "2", "--messages", "9", "--rate", "300",
        "--strict",
    )  # fmt: skip
    assert status == 3
    assert result["lost"] == 3 * 2


def test_churn_counts_loss_only_for_those_that_stayed(
    start_server: StartServer, bench: RunBench
) -> None:
    url = start_server("reference")
    status, [result] = bench(
        "churn", "--url", url, "--stay", "4", "--churn-rate", "20", "--churn-lifetime", "0.2",
        "--duration", "1", "--rate", "50",
    )  # fmt: skip
    assert status == 0
    assert result["delivered"] == result["published"] * 4
    assert (result["lost"], result["misrouted"], result["duplicates"]) == (0, 0, 0)
    assert result["churn"]["connects"] >= 1
    assert result["churn"]["failures"] == 0


def test_idle_measures_a_spawned_reference_server(bench: RunBench) -> None:
    status, [result] = bench(
        "idle", "--target", "reference", "--connections", "20", "--duration", "0.5"
    )
    assert status == 0
    assert result["subscribers"] == 20
    assert result["published"] == 0
    assert result["server_rss_per_conn_kb"] is not None


def test_with_reference_prints_the_ratio(start_server: StartServer, bench: RunBench) -> None:
    url = start_server("reference")
    status, results = bench(
        "compare", "fanout", "--url", url, "--subscribers", "3", "--messages", "20",
        "--rate", "200",
    )  # fmt: skip
    assert status == 0
    assert [r["target"] for r in results] == ["feeds", "reference"]
    assert results[0]["vs_reference"] is not None
    assert all(r["lost"] == 0 and r["delivered"] == 20 * 3 for r in results)


def test_spawned_feeds_server_delivers_everything_once(bench: RunBench) -> None:
    status, [result] = bench(
        "fanout", "--spawn", "1", "--subscribers", "4", "--messages", "30", "--rate", "300"
    )
    assert status == 0
    assert result["delivered"] == 30 * 4
    assert (result["lost"], result["misrouted"], result["duplicates"]) == (0, 0, 0)
    assert result["presence_events"] == 0  # spawned with --quiet-namespaces bench


def test_unreachable_url_is_one_line_and_status_1(
    bench: RunBench, capsys: pytest.CaptureFixture[str]
) -> None:
    status, results = bench("fanout", "--url", f"ws://127.0.0.1:{free_port()}")
    assert status == 1
    assert results == []
    error = capsys.readouterr().err.strip()
    assert error.startswith("sanic-feeds bench: error: cannot subscribe at ws://127.0.0.1:")
    assert "\n" not in error


def test_baseline_instances_run_interleaved_with_the_ratio(bench: RunBench) -> None:
    status, results = bench(
        "fanout", "--spawn", "1", "--subscribers", "3", "--messages", "20", "--rate", "200",
        "--baseline-arg=--metrics=0",
    )  # fmt: skip
    assert status == 0
    assert [r["target"] for r in results] == ["feeds", "feeds --metrics=0"]
    assert results[0]["vs_reference"] is not None
    assert all(r["lost"] == 0 and r["delivered"] == 20 * 3 for r in results)


@pytest.mark.parametrize(
    "argv",
    [
        ("fanout", "--url", "ws://127.0.0.1:1", "--baseline-arg=--metrics=0"),
        ("compare", "fanout", "--spawn", "1", "--baseline-arg=--metrics=0"),
    ],
)
def test_baseline_arg_needs_spawn_and_no_reference(
    bench: RunBench, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    status, results = bench(*argv)
    assert (status, results) == (2, [])
    assert "--baseline-arg" in capsys.readouterr().err
