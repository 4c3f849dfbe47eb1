#!/usr/bin/env bash
# Runs Tether's whole test suite on a fresh Debian machine with the Rust toolchain:
# installs what the tests need, starts PostgreSQL, runs every test against SQLite, then runs
# the storage-backed suites (store conformance, router tests, black-box e2e) again against
# PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "== Python test tools (python-dotenv)"
venv=${TETHER_TEST_VENV:-/tmp/tether-test-venv}
if [ ! -x "$venv/bin/python" ]; then
  command -v python3 >/dev/null && python3 -m venv "$venv" 2>/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv"
  }
fi
"$venv/bin/pip" install -q --disable-pip-version-check 'python-dotenv==1.1.1'
export TETHER_TEST_PYTHON="$venv/bin/python"

echo "== starting PostgreSQL"
eval "$(bash scripts/pg.sh start)"
trap 'bash scripts/pg.sh stop "$TETHER_PG_DIR"' EXIT
pg_url=$TETHER_TEST_DATABASE_URL
unset TETHER_TEST_DATABASE_URL

echo "== building tether-runner (the runner e2e tests start it next to the tether binary)"
cargo build --locked -p tether-runner

echo "== tests (SQLite)"
cargo test --workspace --locked

echo "== storage-backed tests (PostgreSQL)"
TETHER_TEST_DATABASE_URL=$pg_url cargo test --locked -p tether-store -p tether-server -p tether-cli
