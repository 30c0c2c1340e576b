#!/usr/bin/env bash
# tenantbench.sh — tenant counters with PostgreSQL as the source of truth (README "Tenant
# counters at scale"): for N counters already in the database (seeded by SQL, as a cluster
# that grew them would hold them), a node's start-up load time, RSS per cached counter and idle
# CPU; then increments per second on one hot cached counter, and on a counter the node's full
# cache does not hold (served by the database: --counter-cache 1). Server on CPU 1, ringbench
# on CPU 0. Usage:
#   tools/tenantbench.sh [BIN] [N...]      (default build/ringcount, N = 0 200000 1000000)
# Settings: SECS (5) per throughput run, IDLE_SECS (10).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/ringcount}; shift || true
counts=("$@"); [ ${#counts[@]} -gt 0 ] || counts=(0 200000 1000000)
secs=${SECS:-5} idle=${IDLE_SECS:-10} port=18471 key=tenantbench-key
tmp=$(mktemp -d /tmp/rc-tnb-XXXXXX); chmod 755 "$tmp"
db=$(tools/pg-local.sh "$tmp/pg" start)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
sql() { as_pg psql -h "$tmp/pg" -U postgres -d ringcount -qtAc "$1"; }
pid=
stop() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }; pid=; }
cleanup() { stop
  as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$tmp/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$tmp"; }
trap cleanup EXIT
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
rss_kb() { awk '/^VmRSS/ {print $2}' /proc/$1/status; }
start() { # start [extra args...]: the node on CPU 1, waiting until it listens
  RINGCOUNT_ADMIN_KEY=$key taskset -c 1 "$bin" --listen 127.0.0.1:$port --workers 1 --db "$db" \
    --spill-dir "$tmp/spill" --rate-limit 0 "$@" >"$tmp/log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do curl -sf -o /dev/null localhost:$port/livez && return; sleep 0.1; done
  echo "ringcount did not start: $(tail -3 "$tmp/log")" >&2; exit 1
}
rate() { # rate URL: req/s of POST URL for $secs s (ringbench raw on CPU 0)
  taskset -c 0 build/ringbench raw "$1" -m POST -c 64 -p 16 -d "$secs" 2>&1 |
    awk '/^requests/ {print $7}'
}
hz=$(getconf CLK_TCK)
# the schema, and one tenant with one counter made through the API
start; stop
tid=00000000-0000-4000-8000-000000000001
sql "INSERT INTO rc_tenants (id, label, created_at) VALUES ('$tid', 'bench', now())"
printf '%-10s %10s %14s %12s %16s %18s\n' counters load_ms rss_per_counter idle_cpu_pct \
  hot_inc_req_s uncached_inc_req_s
base_rss=
for n in "${counts[@]}"; do
  sql "DELETE FROM rc_tenant_counters"
  # n counters, and one more (the hot one) that is always there
  sql "INSERT INTO rc_tenant_counters (id, tenant_id, label, value, max_delta, created_at)
       SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(g), 12, '0'))::uuid, '$tid', NULL, 0, 50, now()
       FROM generate_series(0, $n) g"
  hot=00000000-0000-4000-9000-000000000000
  t0=$(date +%s%N); start; t1=$(date +%s%N)
  load_ms=$(( (t1 - t0) / 1000000 ))
  sleep 2
  rss=$(rss_kb $pid); [ -n "$base_rss" ] || base_rss=$rss
  c0=$(ticks $pid); sleep "$idle"; c1=$(ticks $pid)
  cpu=$(python3 -c "print('%.2f' % (100.0 * ($c1 - $c0) / $hz / $idle))")
  per=$(python3 -c "print('%.0f B' % (($rss - $base_rss) * 1024.0 / $n) if $n else '-')")
  hot_rate=$(rate "http://127.0.0.1:$port/tenants/$tid/counters/$hot/inc")
  stop
  # a counter the full cache cannot hold: every increment is made in PostgreSQL
  start --counter-cache 1
  far=00000000-0000-4000-9000-$(printf '%012x' "$n")
  unc_rate=-
  [ "$n" -gt 0 ] && unc_rate=$(rate "http://127.0.0.1:$port/tenants/$tid/counters/$far/inc")
  stop
  printf '%-10s %10s %14s %12s %16s %18s\n' "$n" "$load_ms" "$per" "$cpu" "$hot_rate" "$unc_rate"
done
