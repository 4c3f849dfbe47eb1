#!/usr/bin/env bash
# Runner tunnel benchmarks (issue #6), release build:
#   bash scripts/bench_tunnel.sh               # both: ping round trips, then 2,000 runners
#   bash scripts/bench_tunnel.sh roundtrip     # runner.ping at concurrency 1 and 64 (20,000 each)
#   bash scripts/bench_tunnel.sh roundtrip --levels 64 --iters 2000000   # one level, longer
#   bash scripts/bench_tunnel.sh scale --runners 2000 --idle-secs 20
# Round trip: server and runner in one process (real mTLS tunnel, Hub::call, then HTTP).
# Scale: the real `tether server --dev` as a child process; its RSS per idle runner, then a
# restart (SIGTERM, same data and tunnel port) and the reconnect curve.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each runner holds a socket in the bench and one in the server (which inherits this limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "load before: $(uptime)"
cargo bench -p tether-cli --bench tunnel --locked -- "$@"
