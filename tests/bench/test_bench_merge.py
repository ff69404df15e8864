"""How one run's row follows from what its processes reported (pure arithmetic)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from sanic_feeds.bench.ipc import ChurnTally, WorkerResult
from sanic_feeds.bench.probe import ServerSample
from sanic_feeds.bench.results import RunResult, merge_worker_results
from sanic_feeds.bench.scenarios import RunPlan, Scenario, ScenarioConfig, plan_run
from sanic_feeds.bench.stats import ChannelTally, LatencyHistogram

MS = 1_000_000
S = 1_000_000_000


def plan(scenario: Scenario = Scenario.FANOUT, subscribers: int = 4, channels: int = 1) -> RunPlan:
    config = ScenarioConfig(scenario, subscribers=subscribers, channels=channels, procs=2)
    return plan_run(config, ["ws://a"], "t")


def worker(
    index: int,
    tallies: Mapping[int, ChannelTally],
    *,
    latencies_ms: tuple[int, ...] = (),
    churn: ChurnTally | None = None,
    closed: Mapping[int, int] | None = None,
    errors: Mapping[str, int] | None = None,
    presence: int = 0,
    last_delivery_ns: int = 0,
) -> WorkerResult:
    latency = LatencyHistogram()
    for ms in latencies_ms:
        latency.record(ms * MS)
    return WorkerResult(
        worker=index,
        latency=latency,
        tallies=tallies,
        churn=churn or ChurnTally(),
        closed_by_server=closed or {},
        error_events=errors or {},
        presence_events=presence,
        first_delivery_ns=0,
        last_delivery_ns=last_delivery_ns,
    )


def test_counts_add_up_over_processes_and_loss_is_what_subscribers_missed() -> None:
    workers = [
        worker(0, {0: ChannelTally(subscribers=2, distinct=20)}, latencies_ms=(1, 2)),
        worker(
            1,
            {0: ChannelTally(subscribers=2, distinct=17, duplicates=2, misrouted=1, reordered=3)},
            latencies_ms=(4,),
        ),
    ]
    row = merge_worker_results(
        plan(), workers, {0: 10}, target="feeds(2)", urls=("ws://a",), run=2, subscribe_s=0.5
    )
    assert (row.target, row.urls, row.run, row.scenario) == ("feeds(2)", ("ws://a",), 2, "fanout")
    assert (row.subscribers, row.channels, row.publishers) == (4, 1, 1)
    assert (row.published, row.delivered, row.expected, row.lost) == (10, 37, 40, 3)
    assert (row.duplicates, row.misrouted, row.reordered, row.foreign) == (2, 1, 3, 0)
    assert row.latency.count == 3
    assert row.max_ms == 4.0
    assert row.subscribe_s == 0.5
    assert row.notes == ()
    assert row.churn is None


def test_each_channel_expects_its_own_subscribers_times_its_own_publishes() -> None:
    # Channel 0's publisher sent 5, channel 1's only 3 (it was slower); each
    # channel has a subscriber in each process.
    workers = [
        worker(0, {0: ChannelTally(subscribers=1, distinct=5), 1: ChannelTally(1, distinct=3)}),
        worker(1, {0: ChannelTally(subscribers=1, distinct=4), 1: ChannelTally(1, distinct=3)}),
    ]
    row = merge_worker_results(
        plan(Scenario.ROOMS, subscribers=4, channels=2),
        workers,
        {0: 5, 1: 3},
        target="feeds",
        urls=("ws://a",),
        run=1,
        subscribe_s=0.1,
    )
    assert (row.published, row.expected, row.delivered, row.lost) == (8, 16, 15, 1)
    assert row.publishers == 2


def test_rates_come_from_the_publishing_span_and_the_last_delivery() -> None:
    workers = [
        worker(0, {0: ChannelTally(subscribers=2, distinct=20)}, last_delivery_ns=5 * S),
        worker(1, {0: ChannelTally(subscribers=2, distinct=20)}, last_delivery_ns=4 * S),
    ]
    row = merge_worker_results(
        plan(),
        workers,
        {0: 10},
        target="feeds",
        urls=("ws://a",),
        run=1,
        subscribe_s=0.1,
        publishing=(1 * S, 3 * S),
    )
    assert row.publish_s == 2.0
    assert row.offered_per_s == 10 / 2.0
    # 40 deliveries from the first publish (1 s) to the last delivery (5 s).
    assert row.delivered_per_s == 40 / 4.0


def test_without_publishing_there_are_no_rates() -> None:
    workers = [worker(0, {0: ChannelTally(subscribers=4)})]
    row = merge_worker_results(
        plan(Scenario.IDLE), workers, {}, target="feeds", urls=("ws://a",), run=1, subscribe_s=0.1
    )
    assert (row.published, row.delivered, row.expected, row.lost) == (0, 0, 0, 0)
    assert (row.offered_per_s, row.delivered_per_s, row.publish_s) == (None, None, None)
    assert row.latency.count == 0 and row.p50_ms is None


def test_memory_per_connection_is_growth_over_every_connection_held() -> None:
    run_plan = plan()  # 4 subscribers and 1 publisher
    assert run_plan.connections == 5
    before = ServerSample(rss_bytes=100 * 2**20, cpu_s=3.0)
    after = ServerSample(rss_bytes=100 * 2**20 + 5 * 16 * 1024, cpu_s=4.0)
    end = ServerSample(rss_bytes=after.rss_bytes, cpu_s=5.5)
    row = merge_worker_results(
        run_plan,
        [],
        {},
        target="feeds",
        urls=("ws://a",),
        run=1,
        subscribe_s=0.1,
        memory=(before, after),
        cpu=(after, end),
    )
    assert row.server_rss_per_conn_kb == 16.0
    assert row.server_rss_mb == pytest.approx(100 + 80 / 1024)
    assert row.server_cpu_s == 1.5


@pytest.mark.parametrize(
    ("memory", "cpu"),
    [
        ((None, ServerSample(1, 1.0)), (ServerSample(1, 1.0), None)),
        ((ServerSample(1, 1.0), None), (None, ServerSample(1, 1.0))),
    ],
)
def test_a_missing_sample_leaves_its_figures_unknown(
    memory: tuple[ServerSample | None, ServerSample | None],
    cpu: tuple[ServerSample | None, ServerSample | None],
) -> None:
    row = merge_worker_results(
        plan(), [], {}, target="feeds", urls=(), run=1, subscribe_s=0.1, memory=memory, cpu=cpu
    )
    assert (row.server_rss_per_conn_kb, row.server_rss_mb, row.server_cpu_s) == (None, None, None)


def test_notes_say_what_went_wrong_besides_the_counts() -> None:
    churn = ChurnTally(failures=2, first_failure="HTTP 503")
    workers = [
        worker(0, {}, closed={1013: 2}, errors={"rate_limited": 1}, presence=3, churn=churn),
        worker(1, {}, closed={1008: 1, 1013: 1}, errors={"rate_limited": 2, "bad": 1}),
    ]
    row = merge_worker_results(
        plan(),
        workers,
        {},
        target="feeds",
        urls=(),
        run=1,
        subscribe_s=0.1,
        probe_note="server RSS and CPU not measured: psutil is not installed",
    )
    assert row.closed_by_server == {1013: 3, 1008: 1}
    assert row.error_events == {"rate_limited": 3, "bad": 1}
    assert row.presence_events == 3
    assert row.notes[0] == "server RSS and CPU not measured: psutil is not installed"
    assert row.notes[1] == "the server closed 4 subscribers during the run (1008x1, 1013x3)"
    assert row.notes[2] == "subscribers received error events: badx1, rate_limitedx3"
    assert row.notes[3].startswith("3 join/leave events received")
    assert row.notes[4] == "2 churn connections failed; first: HTTP 503"


def test_churning_connections_count_in_faults_and_only_churn_shows_their_tally() -> None:
    churn = ChurnTally(connects=5, disconnects=5, delivered=9, duplicates=1, misrouted=2)
    workers = [worker(0, {0: ChannelTally(subscribers=4, distinct=40)}, churn=churn)]

    def merged(scenario: Scenario) -> RunResult:
        return merge_worker_results(
            plan(scenario), workers, {0: 10}, target="feeds", urls=(), run=1, subscribe_s=0.1
        )

    row = merged(Scenario.CHURN)
    assert (row.lost, row.duplicates, row.misrouted) == (0, 1, 2)
    assert row.churn is not None and (row.churn.connects, row.churn.delivered) == (5, 9)
    fanout = merged(Scenario.FANOUT)
    assert fanout.churn is None
    assert fanout.duplicates == 1  # counted whatever the scenario
