#!/usr/bin/env bash
# Idle CPU of a node holding N tenant counters (README "Tenant counters: flush cost follows
# change"): create N counters, wait until they are flushed, then measure the server's CPU
# (utime+stime from /proc) over SECONDS with no traffic. Usage:
#   tools/idlebench.sh [BIN] [N...]      (default build/ringcount, N = 0 200000 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/ringcount}; shift || true
counts=("$@"); [ ${#counts[@]} -gt 0 ] || counts=(0 200000 1000000)
secs=10 port=18470 key=idlebench-key
tmp=$(mktemp -d /tmp/rc-idle-XXXXXX); chmod 755 "$tmp"
db=$(tools/pg-local.sh "$tmp/pg" start)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
sql() { as_pg psql -h "$tmp/pg" -U postgres -d ringcount -qtAc "$1"; }
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$tmp/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$tmp"; }
trap cleanup EXIT
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
printf '%-10s %12s %14s\n' counters cpu_percent flush_p50_ms
for n in "${counts[@]}"; do
  sql "DROP SCHEMA public CASCADE; CREATE SCHEMA public" >/dev/null 2>&1
  RINGCOUNT_ADMIN_KEY=$key taskset -c 1 "$bin" --listen 127.0.0.1:$port --workers 1 --db "$db" \
    --spill-dir "$tmp/spill" --rate-limit 0 >"$tmp/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null localhost:$port/livez && break; sleep 0.1; done
  tid=$(curl -s -XPOST -H "X-API-Key: $key" -d '{"label":"idle"}' localhost:$port/tenants |
        sed 's/.*"tenant_id":"\([^"]*\)".*/\1/')
  if [ "$n" -gt 0 ]; then
    taskset -c 0 build/ringbench raw "http://127.0.0.1:$port/tenants/$tid/counters" -m POST -b '{}' \
      -H "X-API-Key: $key" -c 32 -p 16 -n "$n" >/dev/null
  fi
  # wait until the database holds them all (the flush carrying new counters)
  for _ in $(seq 600); do
    [ "$(sql 'SELECT count(*) FROM rc_tenant_counters')" -ge "$n" ] && break; sleep 0.1; done
  sleep 2
  t0=$(ticks $pid); sleep $secs; t1=$(ticks $pid)
  hz=$(getconf CLK_TCK)
  cpu=$(python3 -c "print('%.2f' % (100.0 * ($t1 - $t0) / $hz / $secs))")
  p50=$(curl -s localhost:$port/metrics | python3 -c '
import sys
b = [(float(l.split("le=\"")[1].split("\"")[0].replace("+Inf","inf")), float(l.split()[-1]))
     for l in sys.stdin if l.startswith("ringcount_flush_duration_seconds_bucket")]
tot = b[-1][1] if b else 0
print(next(("%.1f" % (le * 1000) for le, c in b if c >= tot / 2), "-") if tot else "-")')
  printf '%-10s %12s %14s\n' "$n" "$cpu" "$p50"
  kill -TERM $pid; wait $pid || true; pid=
done
