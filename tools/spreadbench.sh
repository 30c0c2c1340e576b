#!/usr/bin/env bash
# spreadbench.sh — increments spread over many tenant counters (README "Tenant counters at
# scale"), N of them seeded in PostgreSQL by SQL with the ids 00000000-0000-4000-9000-<12 hex
# digits: the counter's number>, as tenantbench.sh seeds them. Two tables:
#  (a) flush time vs dirty counters: K distinct counters incremented once each (ringbench raw
#      --spread K --spread-seq), the duration of the flush that carried them, and whether the
#      database's sum grew by exactly K;
#  (b) inc req/s on N spread counters (ringbench raw --spread N: a hash of each request's
#      number picks its counter) with a cache of N, of all N (N + N/32 + 16: it keeps some
#      room free) and of N/4 (mostly misses, looked up), the hit rate from /metrics
#      (1 - ringcount_tenant_lookups_total / requests), and the exactness check: after
#      SIGTERM (the final flush) the database's sum grew by exactly the 2xx answers.
# Server on CPU 1, ringbench on CPU 0. Usage:
#   tools/spreadbench.sh [BIN] [N]      (default build/ringcount, N = 1000000)
# Settings: SECS (5) per throughput run, FLUSH_KS ("1000 10000 65536"), RINGBENCH
# (build/ringbench).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/ringcount} n=${2:-1000000}
secs=${SECS:-5} ks=${FLUSH_KS:-1000 10000 65536} rb=${RINGBENCH:-build/ringbench}
port=18472 key=spreadbench-key url=http://127.0.0.1:18472
tmp=$(mktemp -d /tmp/rc-spb-XXXXXX); chmod 755 "$tmp"
db=$(tools/pg-local.sh "$tmp/pg" start)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
sql() { as_pg psql -h "$tmp/pg" -U postgres -d ringcount -qtAc "$1"; }
pid=
stop() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }; pid=; }
cleanup() { stop
  as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$tmp/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$tmp"; }
trap cleanup EXIT
start() { # start [extra args...]: the node on CPU 1, waiting until it listens
  RINGCOUNT_ADMIN_KEY=$key taskset -c 1 "$bin" --listen 127.0.0.1:$port --workers 1 --db "$db" \
    --spill-dir "$tmp/spill" --rate-limit 0 "$@" >"$tmp/log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do curl -sf -o /dev/null $url/livez && return; sleep 0.1; done
  echo "ringcount did not start: $(tail -3 "$tmp/log")" >&2; exit 1
}
metric() { curl -sf $url/metrics | awk -v m="$1" '$1 == m {print $2}'; }
fcount() { metric ringcount_flush_duration_seconds_count; }
fsum() { metric ringcount_flush_duration_seconds_sum; }
tid=00000000-0000-4000-8000-000000000001 cid=00000000-0000-4000-9000-
inc=$url/tenants/$tid/counters/$cid
dbsum() { sql "SELECT coalesce(sum(value), 0) FROM rc_tenant_counters WHERE tenant_id = '$tid'"; }
bench() { # bench ARGS...: ringbench raw POST of counter {n}'s inc on CPU 0, output in $tmp/rb
  taskset -c 0 "$rb" raw "$inc{n}/inc" -m POST -c 64 -p 16 "$@" >"$tmp/rb" 2>"$tmp/rb.err" ||
    { echo "ringbench failed: $(tail -3 "$tmp/rb.err")" >&2; exit 1; }
}
ok2xx() { # the 2xx answers of the last run ("status     204: 12 404: 3")
  awk '/^status/ {for (i = 2; i < NF; i += 2) if ($i ~ /^2..:$/) s += $(i + 1)}
       END {print s + 0}' "$tmp/rb"; }

# the schema, then one tenant with counters 0 .. N-1
start; stop
sql "INSERT INTO rc_tenants (id, label, created_at) VALUES ('$tid', 'bench', now())"
sql "INSERT INTO rc_tenant_counters (id, tenant_id, label, value, max_delta, created_at)
     SELECT ('$cid' || lpad(to_hex(g), 12, '0'))::uuid, '$tid', NULL, 0, 50, now()
     FROM generate_series(0, $n - 1) g"

# The cache keeps 1/64 of itself (16..4,096 records) free, so --counter-cache N holds only
# N - N/64 counters and the rest churn through lookups: N + N/32 + 16 holds all N.
all=$((n + n / 32 + 16))
echo "(a) flush time vs dirty counters (N = $n, --counter-cache $all, --flush-ms 2000)"
# --db-timeout-ms 60000: a flush of 65,536 counters may outlast the default 5 s, which would
# cancel it and retry with halved caps instead of measuring it
start --counter-cache "$all" --flush-ms 2000 --db-timeout-ms 60000
# Every committed flush is observed in ringcount_flush_duration_seconds, the empty heartbeat
# (one a second while dozing, one per --flush-ms otherwise) too: show how many there are.
h0=$(fcount); sleep 3; h1=$(fcount)
echo "idle: $((h1 - h0)) flushes in 3 s, each counted in ringcount_flush_duration_seconds"
# So the delta is taken over a window holding only the flush(es) carrying the K counters: a
# ?sync=1 increment is answered once a flush has committed (it also ends a doze, whose first
# build would otherwise carry the first requests alone), and the next build is --flush-ms
# (2 s) after that one; the K increments take well under that, the window ends when the
# database holds all K, and its flush count is printed (1: nothing else was in it).
printf '%-14s %8s %12s %12s %14s %6s\n' dirty_counters flushes flush_ms ms_per_flush \
  db_sum_delta exact
for k in $ks; do
  [ "$k" -le "$n" ] || { printf '%-14s (more than N, skipped)\n' "$k"; continue; }
  curl -sf -o /dev/null -X POST "${inc}000000000000/inc?sync=1"
  s0=$(dbsum) c0=$(fcount) t0=$(fsum)
  bench -n "$k" --spread "$k" --spread-seq
  for _ in $(seq 400); do
    [ "$(dbsum)" -ge $((s0 + k)) ] && [ "$(fcount)" -gt "$c0" ] && break; sleep 0.05
  done
  s1=$(dbsum) c1=$(fcount) t1=$(fsum)
  [ "$(ok2xx)" -eq "$k" ] || echo "  ($(ok2xx) of $k increments answered 2xx)"
  awk -v k="$k" -v f=$((c1 - c0)) -v a="$t0" -v b="$t1" -v d=$((s1 - s0)) 'BEGIN {
    printf "%-14s %8d %12.1f %12.1f %14d %6s\n", k, f, (b - a) * 1000, f ? (b - a) * 1000 / f : 0,
      d, d == k ? "yes" : "NO" }'
done
stop

echo "(b) inc req/s on N = $n spread counters (-c 64 -p 16, ${secs} s)"
printf '%-10s %12s %10s %10s %10s %12s %12s %6s\n' cache req_s p99 requests lookups \
  hit_rate ok_2xx exact
# A flush of 65,536 counters can take ~5 s here, past --db-timeout-ms's default: cancelled and
# retried, and the final flush at SIGTERM then spills what it could not finish (replayed at the
# next start). The timeouts are raised so every answer is in the database when the node stops;
# a spill file, if any, is replayed by one more start and stop before the check.
slow=(--db-timeout-ms 60000 --shutdown-timeout-ms 600000)
for cache in "$n" "$all" $((n / 4)); do
  start --counter-cache "$cache" "${slow[@]}"
  l0=$(metric ringcount_tenant_lookups_total) s0=$(dbsum)
  bench -d "$secs" --spread "$n"
  l1=$(metric ringcount_tenant_lookups_total)
  stop # SIGTERM: the final flush commits what the node counted
  if compgen -G "$tmp/spill/*" >/dev/null; then
    start --counter-cache "$cache" "${slow[@]}"; stop
  fi
  s1=$(dbsum) ok=$(ok2xx)
  read -r reqs rps < <(awk '/^requests/ {print $2, $7}' "$tmp/rb")
  p99=$(awk '/^latency/ {for (i = 1; i < NF; i++) if ($i == "p99") print $(i + 1) $(i + 2)}' \
    "$tmp/rb")
  awk -v c="$cache" -v r="$rps" -v p="$p99" -v q="$reqs" -v l=$((l1 - l0)) -v o="$ok" \
    -v d=$((s1 - s0)) 'BEGIN {
    printf "%-10s %12.0f %10s %10d %10d %12.4f %12d %6s\n", c, r, p, q, l, q ? 1 - l / q : 0, o,
      d == o ? "yes" : "NO(" d ")" }'
done
