"""Pure accounting: histograms, ledgers, tallies (no event loop, no socket)."""

from __future__ import annotations

import pytest

from sanic_feeds.bench.stats import (
    ChannelTally,
    LatencyHistogram,
    Ledger,
    Outcome,
    count_lost,
    median,
    merge_tallies,
)

MS = 1_000_000


def test_empty_histogram_has_no_percentiles() -> None:
    histogram = LatencyHistogram()
    assert histogram.percentile_ms(0.5) is None
    assert histogram.max_ms is None
    assert histogram.mean_ms is None
    assert histogram.span_ms() == ([], [])


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_percentiles_are_within_bucket_resolution(fraction: float) -> None:
    histogram = LatencyHistogram()
    samples = [n * MS // 10 for n in range(1, 1001)]  # 0.1 ms .. 100 ms
    for sample in samples:
        histogram.record(sample)
    exact = samples[int(fraction * len(samples)) - 1] / MS
    assert histogram.percentile_ms(fraction) == pytest.approx(exact, rel=0.025)
    assert histogram.max_ms == 100.0
    assert histogram.mean_ms == pytest.approx(sum(samples) / len(samples) / MS)


def test_percentiles_stay_within_min_and_max() -> None:
    histogram = LatencyHistogram()
    histogram.record(5 * MS)
    assert histogram.percentile_ms(0.0) == histogram.percentile_ms(1.0) == 5.0


def test_negative_and_huge_latencies_are_clamped_into_the_end_buckets() -> None:
    histogram = LatencyHistogram()
    histogram.record(-3)
    histogram.record(10**15)  # 11 days
    assert histogram.count == 2
    assert histogram.min_ns == 0
    assert histogram.counts[0] == histogram.counts[-1] == 1


def test_merging_equals_recording_everything_in_one() -> None:
    left, right, whole = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for n in range(1, 500):
        (left if n % 2 else right).record(n * 7919)
        whole.record(n * 7919)
    left.merge(right)
    assert left == whole
    left.merge(LatencyHistogram())
    assert left == whole


def test_percentile_fraction_must_be_a_fraction() -> None:
    with pytest.raises(ValueError):
        LatencyHistogram().percentile_ns(1.5)


def test_span_covers_empty_buckets_between_used_ones() -> None:
    histogram = LatencyHistogram()
    histogram.record(1 * MS)
    histogram.record(10 * MS)
    edges, counts = histogram.span_ms()
    assert len(edges) == len(counts) + 1
    assert sum(counts) == 2
    assert edges[0] <= 1.0 < edges[1] and edges[-2] <= 10.0 < edges[-1]


def test_ledger_tells_new_duplicate_and_reordered() -> None:
    ledger = Ledger("bench:a")
    assert ledger.record(0, "bench:a", "bench:a") is Outcome.NEW
    assert ledger.record(2, "bench:a", "bench:a") is Outcome.NEW
    assert ledger.record(1, "bench:a", "bench:a") is Outcome.NEW
    assert ledger.record(2, "bench:a", "bench:a") is Outcome.DUPLICATE
    assert (ledger.distinct, ledger.duplicates, ledger.reordered) == (3, 1, 1)
    assert ledger.next_seq == 3


def test_ledger_counts_misrouting_by_payload_or_envelope() -> None:
    ledger = Ledger("bench:a")
    assert ledger.record(0, "bench:b", "bench:b") is Outcome.MISROUTED
    assert ledger.record(0, "bench:b", "bench:a") is Outcome.MISROUTED
    assert ledger.record(0, "bench:a", "bench:b") is Outcome.MISROUTED
    assert (ledger.misrouted, ledger.distinct) == (3, 0)
    # A misrouted copy does not make the real one a duplicate.
    assert ledger.record(0, "bench:a", "bench:a") is Outcome.NEW


@pytest.mark.parametrize("seq", [-1, "3", 2.0, None, True])
def test_ledger_counts_payloads_without_a_sequence_number_as_foreign(seq: object) -> None:
    ledger = Ledger("bench:a")
    assert ledger.record(seq, "bench:a", "bench:a") is Outcome.FOREIGN
    assert (ledger.foreign, ledger.distinct) == (1, 0)


def test_ledger_grows_for_large_sequence_numbers() -> None:
    ledger = Ledger("bench:a")
    for seq in (0, 100_000, 5, 100_000):
        ledger.record(seq, "bench:a", "bench:a")
    assert (ledger.distinct, ledger.duplicates) == (3, 1)


def test_distinct_below_counts_only_the_published_range() -> None:
    ledger = Ledger("bench:a")
    for seq in (0, 1, 7, 8, 9, 15, 16, 40):
        ledger.record(seq, "bench:a", "bench:a")
    assert ledger.distinct_below(0) == 0
    assert ledger.distinct_below(8) == 3
    assert ledger.distinct_below(10) == 5
    assert ledger.distinct_below(17) == 7
    assert ledger.distinct_below(10_000) == 8


def test_loss_is_what_each_channel_subscriber_missed() -> None:
    first, second = ChannelTally(), ChannelTally()
    for missing in (0, 2):
        ledger = Ledger("bench:a")
        for seq in range(10 - missing):
            ledger.record(seq, "bench:a", "bench:a")
        first.add_ledger(ledger)
    ledger = Ledger("bench:b")
    for seq in range(5):
        ledger.record(seq, "bench:b", "bench:b")
    second.add_ledger(ledger)
    tallies = merge_tallies([{0: first}, {1: second}])
    assert count_lost({0: 10, 1: 5}, tallies) == 2
    assert count_lost({0: 10, 1: 7}, tallies) == 4
    # Nobody published on channel 1: nothing to lose there, and never negative.
    assert count_lost({0: 10}, tallies) == 2


def test_tallies_of_one_channel_from_several_processes_add_up() -> None:
    one = ChannelTally(subscribers=2, distinct=10, duplicates=1, misrouted=2, reordered=3)
    two = ChannelTally(subscribers=1, distinct=4, foreign=5)
    merged = merge_tallies([{0: one}, {0: two}])
    assert merged == {
        0: ChannelTally(
            subscribers=3, distinct=14, duplicates=1, misrouted=2, reordered=3, foreign=5
        )
    }


def test_median_ignores_unknown_values() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None, None]) is None
    assert median([]) is None
