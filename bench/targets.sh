#!/usr/bin/env bash
# Every row of the performance targets (docs/benchmarks.md), each as three runs interleaved with
# the reference server, plus the load generator's own ceiling. (RSS per connection is only
# meaningful in the idle rows and in the first run of the others: later runs reuse the memory
# the first one freed.)
#
#   bench/targets.sh [REDIS_URL] [OUT_DIR]
#
# REDIS_URL defaults to redis://127.0.0.1:6379/0 (two spawned instances share it; the bench's
# channels are namespaced "bench:"). Results go to OUT_DIR (default bench-results/): one JSON
# line per run and per median in results.jsonl, the tables in report.txt, and a latency plot
# of the fanout run. Takes about 15 minutes; run it on a quiet machine.
set -euo pipefail

redis_url=${1:-redis://127.0.0.1:6379/0}
out=${2:-bench-results}
mkdir -p "$out"
: >"$out/results.jsonl"
: >"$out/report.txt"

# Rows whose runs lost, misrouted or duplicated a message (--strict exits 3 for them): the
# other rows still run, and the script exits 3 at the end.
failed=()

run() {
    local name=$1 status=0
    shift
    printf '\n==> %s: sanic-feeds bench %s\n' "$name" "$*" | tee -a "$out/report.txt" >&2
    sanic-feeds bench "$@" --json 2>>"$out/report.txt" | sed "s/^{/{\"row\":\"$name\",/" >>"$out/results.jsonl" ||
        status=$?
    if ((status != 0)); then
        failed+=("$name (exit $status)")
    fi
}

two_instances=(--spawn 2 --broker "$redis_url" --repeat 3 --with-reference --strict)

run ceiling fanout --ceiling --subscribers 1000 --rate max --duration 8
run fanout-max fanout "${two_instances[@]}" --subscribers 1000 --rate max --duration 8 \
    --plot "$out/fanout-max-latency.png"
run fanout-100k fanout "${two_instances[@]}" --subscribers 1000 --rate 100 --duration 10
run fanout-5000 fanout "${two_instances[@]}" --subscribers 5000 --rate 20 --duration 10
run rooms-100k rooms "${two_instances[@]}" --channels 50 --subscribers-per-channel 20 \
    --rate 5000 --duration 10
run rooms-40k rooms "${two_instances[@]}" --channels 50 --subscribers-per-channel 20 \
    --rate 2000 --duration 10
run churn churn "${two_instances[@]}" --stay 1000 --churn-rate 200 --duration 10
# RSS per connection is growth on a fresh server: one invocation per run, not --repeat.
for _ in 1 2 3; do
    run idle idle --spawn 1 --with-reference --connections 10000 --duration 5
done

printf '\nresults: %s/results.jsonl, tables: %s/report.txt\n' "$out" "$out" >&2
if ((${#failed[@]})); then
    printf 'rows that lost, misrouted or duplicated a message, or failed: %s\n' "${failed[*]}" >&2
    exit 3
fi
