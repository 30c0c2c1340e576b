#!/usr/bin/env bash
# Persistence under database faults, measured (README "Persistence faults, measured"):
#   1. recovery: time from the end of each fault to the first durable increment committed
#      after it (a durable 200 is answered only after its flush commits);
#   2. durable POST /api/v1/increment req/s and p99 while a loop terminates the server's
#      backend every 200 ms, against no fault, alternating 4 times (A/B in one run);
#   3. spill: 1,000,000 distinct users pending with PostgreSQL down, SIGTERM (write time from
#      the server's log), then a start with PostgreSQL up (replay time from its log);
#   4. new users, no fault: 100,000 distinct users posted with PostgreSQL up, the transaction
#      time of the flushes that inserted them (ringcount_flush_duration_seconds _sum/_count).
# Server pinned to CPU 1, ringbench to CPU 0 (PostgreSQL unpinned). A private PostgreSQL 15 in a
# temp dir (tools/pg-local.sh: fsync on, like `make run`).
# Usage: tools/faultbench.sh [SECONDS] [SECTIONS]   (SECTIONS: digits, default 1234)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8} sections=${2:-1234}
want() { [[ $sections == *$1* ]]; }
rc=build/ringcount rb=build/ringbench
[ -x $rc ] && [ -x $rb ] || { echo "run make first" >&2; exit 1; }
tmp=$(mktemp -d /tmp/rc-faultbench-XXXXXX)
chmod 755 "$tmp"
pg=$tmp/pg port=18480 spill=$tmp/spill
db=$(tools/pg-local.sh "$pg" start)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
sql() { as_pg psql -h "$pg" -U postgres -d ringcount -qtAc "$1"; }
srv_pid=
cleanup() {
  [ -n "$srv_pid" ] && kill -9 "$srv_pid" 2>/dev/null || true
  as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
start() { # start [extra args...]: server on CPU 1, waits until it listens
  taskset -c 1 $rc --listen 127.0.0.1:$port --workers 1 --db "$db" --spill-dir "$spill" \
    --durable-timeout-ms 2000 --db-timeout-ms 1000 "$@" >"$tmp/server.log" 2>&1 &
  srv_pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null localhost:$port/livez && return; sleep 0.1; done
  echo "server did not start:" >&2; cat "$tmp/server.log" >&2; exit 1
}
stop() { kill -TERM "$srv_pid"; wait "$srv_pid" || true; srv_pid=; }
now_ms() { date +%s%3N; }
# ms from now until a durable increment answers 200
until_durable() {
  local t0; t0=$(now_ms)
  until [ "$(curl -s -m 3 -o /dev/null -w '%{http_code}' -XPOST localhost:$port/api/v1/increment)" = 200 ]; do
    sleep 0.005; done
  echo $(( $(now_ms) - t0 ))
}
backend() { sql "SELECT pid FROM pg_stat_activity WHERE application_name = 'ringcount-node-1' LIMIT 1"; }
# post_users N PREFIX: N events from N distinct users (PREFIX-0 ...), 500 pipelined at a time on
# one connection from CPU 0, every one answered 200
post_users() {
  taskset -c 0 python3 - "$port" "$1" "$2" <<'EOF'
import socket, sys
port, N, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
B = 500
s = socket.create_connection(("127.0.0.1", port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
got = 0
for base in range(0, N, B):
    reqs = []
    for i in range(base, min(base + B, N)):
        body = '{"userId":"%s-%d","value":1}' % (prefix, i)
        reqs.append("POST /event HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    s.sendall("".join(reqs).encode())
    need = len(reqs); buf = b""
    while True:
        buf += s.recv(1 << 20)
        if buf.count(b"HTTP/1.1 200") >= need: break
    got += need
print("posted %d events from %d distinct users (all 200)" % (got, N))
EOF
}
# metric NAME: its sample in /metrics
metric() { curl -s localhost:$port/metrics | awk -v m="$1" '$1 == m { print $2 }'; }

if want 1; then
echo "== 1. recovery after each fault (ms from the fault's end to a committed durable increment)"
start
$rb increment "http://127.0.0.1:$port/api/v2/increment" -c 16 -d 1000 --no-verify >/dev/null 2>&1 &
load=$!
fault() { # name, then the commands: inject; sleep; clear
  local name=$1; shift
  "$@"
  printf '%-34s %6s ms\n' "$name" "$(until_durable)"
}
sqlerr() {
  sql "ALTER TABLE rc_flush_ledger ADD CONSTRAINT fb_tmp CHECK (flush_seq < 0) NOT VALID"
  sleep 2; sql "ALTER TABLE rc_flush_ledger DROP CONSTRAINT fb_tmp"; }
sigstop() { local p; p=$(backend); kill -STOP "$p"; sleep 5; kill -CONT "$p"; }
lock() {
  as_pg psql -h "$pg" -U postgres -d ringcount -qc 'BEGIN' \
    -c 'LOCK TABLE rc_counters IN ACCESS EXCLUSIVE MODE' -c 'SELECT pg_sleep(5)' -c 'COMMIT' >/dev/null; }
terminate() { for _ in $(seq 25); do sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
  WHERE application_name = 'ringcount-node-1'" >/dev/null; sleep 0.2; done; }
restart() { as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$pg/data" -m immediate -w restart \
  -o "-k $pg -c listen_addresses=''" >/dev/null; }
fault "SQL error 2 s (ledger constraint)" sqlerr
fault "backend SIGSTOP 5 s" sigstop
fault "ACCESS EXCLUSIVE lock 5 s" lock
fault "pg_terminate_backend every 200 ms, 5 s" terminate
fault "pg_ctl restart -m immediate" restart
kill "$load" 2>/dev/null || true; wait "$load" 2>/dev/null || true
grep -c '"flush failed' "$tmp/server.log" | sed 's/^/flush failures logged (rate-limited): /'
stop
fi

if want 2; then
echo
echo "== 2. durable increments, 64 connections, ${secs} s each: no fault vs terminate every 200 ms"
start
killer() { while :; do sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
  WHERE application_name = 'ringcount-node-1'" >/dev/null 2>&1; sleep 0.2; done; }
printf '%-10s %12s %10s %10s %8s\n' run req/s p50_ms p99_ms non2xx
for round in 1 2 3 4; do
  for mode in none terminate; do
    kp=
    if [ $mode = terminate ]; then killer & kp=$!; fi
    out=$(taskset -c 0 $rb increment "http://127.0.0.1:$port/api/v1/increment" -c 64 -d "$secs" \
          --no-verify --json 2>/dev/null | tail -1)
    [ -n "$kp" ] && { kill $kp; wait $kp 2>/dev/null || true; }
    python3 - "$mode" "$out" <<'EOF'
import json, sys
mode, j = sys.argv[1], json.loads(sys.argv[2])
lat = j["latency_us"]
errs = sum(v for k, v in j["status"].items() if not k.startswith("2"))
print("%-10s %12.0f %10.2f %10.2f %8d" % (mode, j["rps"], lat["p50"] / 1000.0,
      lat["p99"] / 1000.0, errs))
EOF
    sleep 1
  done
done
stop
fi

if want 3; then
echo
echo "== 3. spill: 1,000,000 distinct users pending, PostgreSQL down"
start --shutdown-timeout-ms 5000
as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$pg/data" -m fast -w stop >/dev/null
post_users 1000000 spill
t0=$(now_ms); stop; echo "SIGTERM to exit: $(( $(now_ms) - t0 )) ms"
grep -o '"msg":"final flush incomplete[^}]*' "$tmp/server.log" | sed 's/^/  /'
ls -la "$spill"
tools/pg-local.sh "$pg" start >/dev/null
t0=$(now_ms); start; echo "start with replay until listening: $(( $(now_ms) - t0 )) ms"
grep -o '"msg":"spill file replayed[^}]*' "$tmp/server.log" | sed 's/^/  /'
echo "users in the database: $(sql 'SELECT count(*) FROM rc_users')"
stop
fi

if want 4; then
echo
echo "== 4. 100,000 new distinct users, PostgreSQL up: transaction time of the flushes"
start
u0=$(sql 'SELECT count(*) FROM rc_users') # section 3's, if it ran
n0=$(metric ringcount_flush_duration_seconds_count) s0=$(metric ringcount_flush_duration_seconds_sum)
post_users 100000 new
for _ in $(seq 600); do
  [ "$(sql 'SELECT count(*) FROM rc_users')" -ge $((u0 + 100000)) ] && break; sleep 0.1; done
sleep 0.5 # the last flush's metrics
n1=$(metric ringcount_flush_duration_seconds_count) s1=$(metric ringcount_flush_duration_seconds_sum)
echo "new users in the database: $(( $(sql 'SELECT count(*) FROM rc_users') - u0 ))"
python3 -c "import sys; n0,s0,n1,s1=map(float,sys.argv[1:]); print('%d flushes, %.3f s of transaction time (%.1f ms a flush)' % (n1-n0, s1-s0, (s1-s0)/max(n1-n0,1)*1000))" "$n0" "$s0" "$n1" "$s1"
stop
fi
