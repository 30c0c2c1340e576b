#!/usr/bin/env bash
# A private PostgreSQL 15 cluster for development and tests, listening only on a unix socket
# inside DIR (no TCP port to collide with). PostgreSQL refuses to run as root, so initdb and
# pg_ctl run as the `postgres` user.
#   pg-local.sh DIR start   -> init (first time) + start; prints the libpq conninfo
#   pg-local.sh DIR stop    -> fast shutdown
#   pg-local.sh DIR url     -> print the conninfo
set -euo pipefail
dir=${1:?usage: pg-local.sh DIR start|stop|url}; cmd=${2:?usage: pg-local.sh DIR start|stop|url}
bin=/usr/lib/postgresql/15/bin
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; elif [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
conninfo="host=$dir dbname=ringcount user=postgres"
case "$cmd" in
start)
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
  fi
  if ! as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-k $dir -c listen_addresses='' -c fsync=on" start >/dev/null
  fi
  as_pg psql -h "$dir" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='ringcount'" | grep -q 1 ||
    as_pg psql -h "$dir" -U postgres -d postgres -qc "CREATE DATABASE ringcount" >/dev/null
  echo "$conninfo" ;;
stop) as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true ;;
url) echo "$conninfo" ;;
*) echo "usage: pg-local.sh DIR start|stop|url" >&2; exit 2 ;;
esac
