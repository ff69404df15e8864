#!/usr/bin/env bash
# Cost of the atomic publish script against a plain PUBLISH on the same Redis:
# runs each with redis-benchmark, interleaved, and prints requests per second.
#   bench/publish_cost.sh [HOST] [PORT] [RUNS]
set -euo pipefail
host=${1:-127.0.0.1}
port=${2:-6379}
runs=${3:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
sha=$(redis-cli -h "$host" -p "$port" SCRIPT LOAD "$(cat "$here/src/sanic_feeds/brokers/lua/publish.lua")")
envelope='{"d":{"n":1},"t":1795481861016}'
rps() { redis-benchmark -h "$host" -p "$port" -q -n 200000 -c 50 "$@" 2>/dev/null | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | cut -d' ' -f1; }
for run in $(seq "$runs"); do
  script=$(rps EVALSHA "$sha" 2 'feeds:{bench}:meta' 'feeds:{bench}:history' 'feeds:{bench}' "$envelope" 100 300 86400)
  plain=$(rps PUBLISH 'feeds:{bench}' "m1:abc:$envelope")
  echo "run $run: publish script $script/s, plain PUBLISH $plain/s, ratio $(python3 -c "print(round($script/$plain, 2))")"
done
redis-cli -h "$host" -p "$port" DEL 'feeds:{bench}:meta' 'feeds:{bench}:history' > /dev/null
