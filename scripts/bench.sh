#!/usr/bin/env bash
# Secrets benchmarks (issue 5): run on an otherwise idle machine, never beside other builds.
#   bash scripts/bench.sh            # needs wrk (apt-get install wrk) and, for the OpenBao
#                                    # comparison, the venv scripts/test.sh creates
# Prints: cached reads/s and latency over HTTP on loopback (64 connections, SQLite), the same
# for an OpenBao KV v2 read, version writes/s, `tether run -- true` wall time, and KMS/KEK
# unwrap calls during 1,000 cached reads.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
duration=${BENCH_DURATION:-10s}
conns=${BENCH_CONNECTIONS:-64}
if [ -z "${TETHER_BIN:-}" ]; then
  cargo build --release --locked -p tether-cli
fi
bin=${TETHER_BIN:-$PWD/target/release/tether}
venv=${TETHER_TEST_VENV:-/tmp/tether-test-venv}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

tport=$(port)
TETHER_LOG=warn "$bin" server --dev --listen "127.0.0.1:$tport" --data-dir "$work" >"$work/out.log" 2>"$work/err.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q "listening on" "$work/out.log" 2>/dev/null && break; sleep 0.1; done
token=$(sed -n 's/^ *export TETHER_TOKEN=//p' "$work/out.log")
url="http://127.0.0.1:$tport"
export TETHER_ADDR=$url TETHER_TOKEN=$token
"$bin" secret set bench PASSWORD=bench-value USER=app >/dev/null
"$bin" secret set dbench PASSWORD=dev-value --env dev >/dev/null

echo "== Tether: cached secret reads ($conns connections, $duration)"
wrk -t2 -c"$conns" -d"$duration" --latency -H "Authorization: Bearer $token" \
  "$url/v1/orgs/default/secrets/bench/data"

if [ -x "$venv/bin/bao" ]; then
  bport=$(port)
  "$venv/bin/bao" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$bport" \
    -dev-no-store-token >"$work/bao.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$bport/v1/sys/health" && break; sleep 0.1; done
  curl -sf -H "X-Vault-Token: root" -d '{"data":{"PASSWORD":"bench-value","USER":"app"}}' \
    "http://127.0.0.1:$bport/v1/secret/data/bench" >/dev/null
  echo "== OpenBao dev server: KV v2 reads ($conns connections, $duration)"
  wrk -t2 -c"$conns" -d"$duration" --latency -H "X-Vault-Token: root" \
    "http://127.0.0.1:$bport/v1/secret/data/bench"
else
  echo "== OpenBao comparison skipped: $venv/bin/bao missing (run scripts/test.sh once)"
fi

echo "== Tether: writing new versions ($conns connections, $duration)"
cat >"$work/write.lua" <<'LUA'
local counter = 0
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) wrk.method = "POST"; wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"data":{"K":"write-bench-value"}}' end
function request()
  counter = counter + 1
  return wrk.format(nil, "/v1/orgs/default/secrets/w" .. tid .. "-" .. (counter % 200) .. "/versions")
end
LUA
wrk -t2 -c"$conns" -d"$duration" --latency -H "Authorization: Bearer $token" -s "$work/write.lua" "$url"

echo "== tether run --env dev -- true (10 runs, wall time each)"
TIMEFORMAT='%R s'
for _ in $(seq 1 10); do { time "$bin" run --env dev -- true; } 2>&1; done | sort | tr '\n' ' '; echo

echo "== KEK unwraps / KMS calls during 1,000 cached reads"
count() { curl -s "$url/metrics" | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {print s+0}'; }
before_unwrap=$(count tether_kek_unwrap_total); before_kms=$(count tether_kms_calls_total)
for _ in $(seq 1 1000); do curl -s -o /dev/null -H "Authorization: Bearer $token" "$url/v1/orgs/default/secrets/bench/data"; done
echo "kek unwraps: $(( $(count tether_kek_unwrap_total) - before_unwrap )), KMS calls: $(( $(count tether_kms_calls_total) - before_kms ))"
