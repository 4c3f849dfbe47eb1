#!/usr/bin/env bash
# A throwaway PostgreSQL for tests, on 127.0.0.1 with a random port.
#   eval "$(scripts/pg.sh start)"   -> exports TETHER_PG_DIR and TETHER_TEST_DATABASE_URL
#   scripts/pg.sh stop "$TETHER_PG_DIR"
# Works as root: the server runs as the 'postgres' user that Debian's package creates.
set -euo pipefail
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-}" in
start)
  bin=$(bindir)
  [ -n "$bin" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  dir=$(mktemp -d /tmp/tether-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  run_pg "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$dir/initdb.log"
  run_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=400" >/dev/null
  run_pg "$bin/psql" -h "$dir" -p "$port" -U postgres -qAt -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE tether LOGIN PASSWORD 'tether' CREATEDB" \
    -c "CREATE DATABASE tether OWNER tether" >/dev/null
  echo "export TETHER_PG_DIR=$dir TETHER_TEST_DATABASE_URL=postgres://tether:tether@127.0.0.1:$port/tether"
  ;;
stop)
  dir=${2:?usage: pg.sh stop DIR}
  run_pg "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
*) echo "usage: pg.sh start | pg.sh stop DIR" >&2; exit 2 ;;
esac
