#!/usr/bin/env bash
# bench.sh — `make bench`: the side-by-side benchmark suite (SPEC §5).
#
# The server runs on CPU $SERVER_CPU (1) and the load generator on CPU $LOAD_CPU (0), one core
# each. Every comparison runs one warm-up of each side, then alternates A B A B ... for
# $BENCH_ROUNDS rounds, so drift on a shared machine hits both sides alike; tables show
# medians, ratios are medians of the per-round ratios (as shared/bench/versus.py does).
#
#   1. event, plain and $BENCH_DEPTH-deep pipelined: ringcount (ringbench event, verified
#      against /stats after every run) vs nginx `return 204` (ringbench event --no-verify:
#      the identical request stream, nothing to verify).
#   2. load generators: ringbench vs wrk (event.lua / pipeline.lua, written below; skipped
#      without wrk) against the same nginx (gen-*: nginx's one core is the ceiling for both),
#      and against ringcount (gen-rc-*: the server has headroom, the generator is the limit).
#   3. ringcount only: increment v2 (verified), increment v1 (needs BENCH_DB, a libpq
#      conninfo), counter (admin key below; --rate-limit 0).
#   4. increments against Redis INCR (skipped without redis-server/redis-benchmark, Debian
#      package redis-server): ringbench increment /api/v2/increment vs `redis-benchmark -P 1
#      -t incr` (the same connections, one thread) against our own redis-server on
#      $REDIS_PORT, in-memory (--save '' --appendonly no); then, unless BENCH_REDIS_AOF=0,
#      against one with --appendonly yes --appendfsync everysec (beside v2 again: with BENCH_DB
#      it is flushed every 10 ms). Saturated only: redis-benchmark has no rate option.
#   5. offered-rate sweep: ringbench event --rate-sweep $BENCH_RATES --server-pid, ringcount vs
#      nginx `return 204` alternating: server CPU per request at each offered rate (open loop).
#
# Output under bench-results/ (git-ignored): results.md (the tables, date, machine, command),
# one ringbench JSON line per run (*.json), and per-second CSV + SVG plots (*.csv, *.svg).
# Settings (environment): BENCH_SECS (5), BENCH_ROUNDS (3), BENCH_CONNS (256),
# BENCH_DEPTH (16), BENCH_RATES (10000,20000,50000,100000), BENCH_REDIS_AOF (1), SERVER_CPU (1),
# LOAD_CPU (0), BENCH_DB, RC_PORT (18180), NGX_PORT (18181), REDIS_PORT (18182; the durable
# one on REDIS_PORT+1). BENCH_QUICK=1: a smoke run of the whole suite in under 2 minutes
# (BENCH_SECS=2 BENCH_ROUNDS=1 BENCH_RATES=20000,50000 unless set): checks the script, its
# numbers mean nothing.
# Exit 1 if any ringbench run failed (a verification mismatch, error responses, socket errors,
# or nothing answered) or a Redis key did not grow by exactly the INCRs sent; the tables are
# written anyway.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

QUICK=${BENCH_QUICK:-0}
[ "$QUICK" = 0 ] || QUICK=1
if [ "$QUICK" = 1 ]; then
    SECS=${BENCH_SECS:-2}
    ROUNDS=${BENCH_ROUNDS:-1}
    RATES=${BENCH_RATES:-20000,50000}
else
    SECS=${BENCH_SECS:-5}
    ROUNDS=${BENCH_ROUNDS:-3}
    # below both servers' saturation on the 2-core machine (nginx ~145k req/s, ringcount ~200k)
    RATES=${BENCH_RATES:-10000,20000,50000,100000}
fi
REDIS_AOF=${BENCH_REDIS_AOF:-1}
CONNS=${BENCH_CONNS:-256}
DEPTH=${BENCH_DEPTH:-16}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
RC_PORT=${RC_PORT:-18180}
NGX_PORT=${NGX_PORT:-18181}
REDIS_PORT=${REDIS_PORT:-18182}
OUT=bench-results
RB=build/ringbench
RC=build/ringcount
ADMIN_KEY=bench-admin-key
TICK=$(getconf CLK_TCK)

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.csv "$OUT"/*.svg
TMP=$(mktemp -d /tmp/ringbench-suite.XXXXXX)
PIDS=()
FAILED=0

cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "bench: $*" >&2
    exit 1
}

[ -x "$RB" ] || die "$RB missing (make all)"
for c in taskset nginx; do
    command -v "$c" >/dev/null || die "$c is required"
done
HAVE_WRK=0
command -v wrk >/dev/null && HAVE_WRK=1
HAVE_REDIS=1
for c in redis-server redis-benchmark redis-cli; do
    command -v "$c" >/dev/null || HAVE_REDIS=0
done

# is something answering on 127.0.0.1:$1?
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait until 127.0.0.1:$1 accepts connections (5 s)
wait_port() {
    for _ in $(seq 50); do
        port_busy "$1" && return 0
        sleep 0.1
    done
    return 1
}

# user+system CPU ticks of process $1, its threads and its children (nginx workers)
cpu_ticks() {
    local pid=$1 t=0 s f c
    for s in /proc/"$pid"/task/*/stat; do
        f=$(sed 's/.*) //' "$s" 2>/dev/null) || continue
        set -- $f
        t=$((t + ${12} + ${13}))
    done
    for c in $(pgrep -P "$pid"); do
        t=$((t + $(cpu_ticks "$c")))
    done
    echo "$t"
}

# ---- servers ------------------------------------------------------------------------------

port_busy "$NGX_PORT" && die "port $NGX_PORT is in use (set NGX_PORT)"
port_busy "$RC_PORT" && die "port $RC_PORT is in use (set RC_PORT)"

# nginx: the same settings as shared/bench/nginx-204.conf, on $NGX_PORT
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid nginx.pid;
error_log stderr warn;
events { worker_connections 4096; use epoll; }
http {
    access_log off;
    keepalive_timeout 65s;
    keepalive_requests 100000000;   # the default (1000) would force reconnects
    client_body_temp_path client_body;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    server {
        listen 127.0.0.1:$NGX_PORT backlog=4096;
        server_name _;
        location = /event { return 204; }
        location / { return 404; }
    }
}
EOF
taskset -c "$SERVER_CPU" nginx -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" 2>"$TMP/nginx.log" &
NGX_PID=$!
PIDS+=("$NGX_PID")
wait_port "$NGX_PORT" || die "nginx did not start: $(cat "$TMP/nginx.log")"

RC_PID=
if [ -x "$RC" ]; then
    db_args=()
    [ -n "${BENCH_DB:-}" ] && db_args=(--db "$BENCH_DB")
    RINGCOUNT_ADMIN_KEY=$ADMIN_KEY taskset -c "$SERVER_CPU" "$RC" --workers 1 \
        --listen "127.0.0.1:$RC_PORT" --rate-limit 0 "${db_args[@]}" 2>"$TMP/ringcount.log" &
    RC_PID=$!
    PIDS+=("$RC_PID")
    wait_port "$RC_PORT" || {
        echo "bench: ringcount did not start:" >&2
        tail -5 "$TMP/ringcount.log" >&2
        RC_PID=
    }
fi

# start_redis NAME PORT ARGS...: our own redis-server on CPU $SERVER_CPU, 127.0.0.1:PORT (never
# a system one on 6379), files under $TMP/NAME; sets REDIS_PID (empty if it did not start)
start_redis() {
    local name=$1 port=$2
    shift 2
    REDIS_PID=
    if port_busy "$port"; then
        echo "bench: port $port is in use (set REDIS_PORT): skipping $name" >&2
        return 1
    fi
    mkdir -p "$TMP/$name"
    taskset -c "$SERVER_CPU" redis-server --bind 127.0.0.1 --port "$port" --daemonize no \
        --dir "$TMP/$name" --logfile "$TMP/$name.log" "$@" &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for _ in $(seq 50); do
        [ "$(redis-cli -p "$port" PING 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    echo "bench: $name did not start:" >&2
    tail -5 "$TMP/$name.log" >&2
    REDIS_PID=
    return 1
}

REDIS_MEM_PID='' REDIS_AOF_PID='' SYS_REDIS=0
if [ $HAVE_REDIS = 1 ] && [ -n "$RC_PID" ]; then
    # a system redis-server (the Debian service) would share CPU 1 if busy: say so in results
    [ "$(redis-cli -p 6379 PING 2>/dev/null)" = PONG ] && SYS_REDIS=1
    start_redis redis-mem "$REDIS_PORT" --save '' --appendonly no && REDIS_MEM_PID=$REDIS_PID
    if [ "$REDIS_AOF" != 0 ]; then
        start_redis redis-aof $((REDIS_PORT + 1)) --save '' --appendonly yes \
            --appendfsync everysec && REDIS_AOF_PID=$REDIS_PID
    fi
fi

# wrk scripts: the requests of shared/bench/event.lua and pipeline.lua (the 1MRC pattern)
cat >"$TMP/event.lua" <<'EOF'
local reqs, n = {}, 0
function init(args)
   for k = 0, 74999 do
      reqs[k] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" },
         string.format('{"userId":"user_%d","value":%d}', k, k % 1000))
   end
end
function request() local r = reqs[n % 75000]; n = n + 1; return r end
function done(s, lat, r)
   io.write(string.format("RESULT rps=%.1f p99_us=%.0f errors=%d\n",
      s.requests / (s.duration / 1e6), lat:percentile(99),
      s.errors.connect + s.errors.read + s.errors.write + s.errors.status + s.errors.timeout))
end
EOF
cat >"$TMP/pipeline.lua" <<'EOF'
local depth, batches, n = 16, {}, 0
function init(args)
   depth = tonumber(args[1]) or 16
   local i = 0
   for b = 0, 74 do
      local parts = {}
      for k = 1, depth do
         parts[k] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" },
            string.format('{"userId":"user_%d","value":%d}', i % 75000, i % 1000))
         i = i + 1
      end
      batches[b] = table.concat(parts)
   end
end
function request() n = n + 1; return batches[n % 75] end
function done(s, lat, r)
   io.write(string.format("RESULT rps=%.1f p99_us=%.0f errors=%d\n",
      s.requests / (s.duration / 1e6), lat:percentile(99),
      s.errors.connect + s.errors.read + s.errors.write + s.errors.status + s.errors.timeout))
end
EOF

# ---- one run ------------------------------------------------------------------------------

# redis_bench PORT N OUT LOG: N INCRs of one key by redis-benchmark ($CONNS connections, one
# thread, no pipelining) pinned to $LOAD_CPU; sets rps, p99 (us), err and verify: the key
# must have grown by exactly N
redis_bench() {
    local port=$1 nreq=$2 out=$3 log=$4 before after line
    before=$(redis-cli -p "$port" GET 'counter:__rand_int__')
    taskset -c "$LOAD_CPU" redis-benchmark -h 127.0.0.1 -p "$port" -c "$CONNS" -n "$nreq" \
        -P 1 -t incr --csv >"$out" 2>"$log"
    local rc=$?
    after=$(redis-cli -p "$port" GET 'counter:__rand_int__')
    line=$(grep '^"INCR"' "$out" | tail -1 | tr -d '"')
    rps=$(cut -d, -f2 <<<"$line")
    p99=$(awk -F, '{ print $7 * 1000 }' <<<"$line")
    err=$((nreq - (${after:-0} - ${before:-0})))
    verify=ok
    if [ "$rc" -ne 0 ] || [ "$err" -ne 0 ] || [ -z "$rps" ]; then
        verify=FAILED
        echo "bench: redis-benchmark on port $port: exit $rc, the key grew by" \
            "$((${after:-0} - ${before:-0})) of $nreq" >>"$log"
    fi
}

# redis_n PORT: how many requests make a ${SECS}s redis-benchmark run here (a short
# calibration run; redis-benchmark takes a count, not a duration)
redis_n() {
    local rps err verify p99
    redis_bench "$1" $((CONNS * 100)) "$TMP/redis-n.out" "$TMP/redis-n.log"
    awk -v r="${rps:-0}" -v s="$SECS" -v c="$CONNS" 'BEGIN { n = int(r * s); if (n < c * 100) n = c * 100; print n }'
}

# run NAME SERVER_PID TOOL ARGS...: one load run pinned to $LOAD_CPU; appends
# "name rps p99_ms server_cores load_cores errors verify" to $TMP/NAME.runs
run() {
    local name=$1 spid=$2 tool=$3
    shift 3
    local n=$(($(cat "$TMP/$name.n" 2>/dev/null || echo 0) + 1))
    echo "$n" >"$TMP/$name.n"
    local c0 c1 out="$TMP/$name.$n.out" log="$TMP/$name.$n.log" tf="$TMP/$name.$n.time"
    local rps p99 err verify=- t0 t1
    c0=$(cpu_ticks "$spid")
    t0=$(date +%s.%N)
    TIMEFORMAT='%U %S'
    if [ "$tool" = wrk ]; then
        { time taskset -c "$LOAD_CPU" wrk -t1 "$@" >"$out" 2>"$log"; } 2>"$tf"
        rps=$(sed -n 's/^RESULT rps=\([0-9.]*\).*/\1/p' "$out")
        p99=$(sed -n 's/^RESULT.*p99_us=\([0-9.]*\).*/\1/p' "$out")
        err=$(sed -n 's/^RESULT.*errors=\([0-9]*\).*/\1/p' "$out")
        # wrk exits with requests in flight: let the server finish them before the next
        # (verified) run takes its "before" snapshot
        sleep 0.5
    elif [ "$tool" = redis ]; then # ARGS: PORT N
        { time redis_bench "$1" "$2" "$out" "$log"; } 2>"$tf"
        if [ "$verify" = FAILED ]; then
            FAILED=1
            echo "bench: $name run $n failed:" >&2
            tail -3 "$log" >&2
        fi
    else
        { time taskset -c "$LOAD_CPU" "$RB" "$@" --json --out "$OUT/$name-$n" >"$out" \
            2>"$log"; } 2>"$tf"
        local rc=$?
        local j
        j=$(tail -1 "$out")
        echo "$j" >"$OUT/$name-$n.json"
        rps=$(sed -n 's/.*"rps":\([0-9.]*\).*/\1/p' <<<"$j")
        p99=$(sed -n 's/.*"p99":\([0-9.]*\).*/\1/p' <<<"$j")
        err=$(sed -n 's/.*"errors":{"total":\([0-9]*\).*/\1/p' <<<"$j")
        verify=$(sed -n 's/.*"verify":"\([a-z]*\)".*/\1/p' <<<"$j")
        if [ "$rc" -ne 0 ]; then # verification mismatch, error statuses or no responses
            FAILED=1
            verify=FAILED
            echo "bench: $name run $n failed:" >&2
            grep -E "verify|FAILED|errors" "$out" "$log" | head -8 >&2
        fi
        [ -z "$verify" ] && verify=-
    fi
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$spid")
    local lu ls
    read -r lu ls <"$tf"
    awk -v n="$name" -v r="${rps:-0}" -v p="${p99:-0}" -v sc=$((c1 - c0)) -v tk="$TICK" \
        -v lu="${lu:-0}" -v ls="${ls:-0}" -v t0="$t0" -v t1="$t1" -v e="${err:-0}" \
        -v v="$verify" 'BEGIN { d = t1 - t0; if (d <= 0) d = 1;
            printf "%s %.1f %.3f %.3f %.3f %s %s\n", n, r, p / 1000, sc / tk / d, (lu + ls) / d, e, v }' \
        >>"$TMP/$name.runs"
    printf '  %-28s %10.0f req/s  p99 %8.2f ms  %s\n' "$name#$n" "${rps:-0}" \
        "$(awk -v p="${p99:-0}" 'BEGIN { print p / 1000 }')" "$verify" >&2
}

# versus A_NAME A_PID A_TOOL A_ARGS -- B_NAME B_PID B_TOOL B_ARGS: warm-up of each (not
# recorded), then $ROUNDS alternating rounds. The first -- separates A from B.
versus() {
    local a=() b=() seen=0
    for x in "$@"; do
        if [ "$x" = -- ] && [ $seen = 0 ]; then seen=1; continue; fi # later ones are B's
        if [ $seen = 0 ]; then a+=("$x"); else b+=("$x"); fi
    done
    echo "bench: ${a[0]} vs ${b[0]} (${SECS}s runs, warm-up + $ROUNDS rounds)" >&2
    run "${a[0]}-warmup" "${a[@]:1}"
    run "${b[0]}-warmup" "${b[@]:1}"
    for _ in $(seq "$ROUNDS"); do
        run "${a[@]}"
        run "${b[@]}"
    done
    echo "${a[0]} ${b[0]}" >>"$TMP/${PAIRS:-pairs}"
}

# sweep NAME SERVER_PID ARGS...: one `ringbench ARGS --rate-sweep $RATES --server-pid PID`
# pinned to $LOAD_CPU (writes $OUT/NAME-<n>-sweep.svg); appends "round offered achieved p50_ms
# p99_ms cpu_us_per_req errors" per offered rate to $TMP/NAME.sweep
sweep() {
    local name=$1 spid=$2
    shift 2
    local n=$(($(cat "$TMP/$name.n" 2>/dev/null || echo 0) + 1))
    echo "$n" >"$TMP/$name.n"
    local out="$TMP/$name.$n.out" log="$TMP/$name.$n.log"
    taskset -c "$LOAD_CPU" "$RB" "$@" --rate-sweep "$RATES" --server-pid "$spid" \
        --out "$OUT/$name-$n" >"$out" 2>"$log"
    local rc=$?
    # the table's rows: "sweep OFFERED ACHIEVED P50 P99 CPU ERRORS" (not "sweep 1/4: ...")
    awk -v n="$n" '$1 == "sweep" && NF == 7 && $2 ~ /^[0-9.]+$/ {
        print n, $2, $3, $4, $5, $6, $7 }' "$out" >>"$TMP/$name.sweep"
    if [ "$rc" -ne 0 ]; then
        FAILED=1
        echo "bench: $name sweep $n failed:" >&2
        grep -E "verify|FAILED|errors" "$out" "$log" | head -8 >&2
    fi
    awk -v n="$name#$n" '$1 == "sweep" && NF == 7 && $2 ~ /^[0-9.]+$/ {
        printf "  %-28s offered %8.0f  achieved %8.0f  p99 %7.2f ms  %s us CPU/req\n",
            n, $2, $3, $5, $6 }' "$out" >&2
}

# sweep_versus A_NAME A_PID A_ARGS -- B_NAME B_PID B_ARGS: $ROUNDS alternating sweeps (no
# warm-up: they run after the saturated runs)
sweep_versus() {
    local a=() b=() seen=0
    for x in "$@"; do
        if [ "$x" = -- ]; then seen=1; continue; fi
        if [ $seen = 0 ]; then a+=("$x"); else b+=("$x"); fi
    done
    echo "bench: sweep ${a[0]} vs ${b[0]} (offered $RATES req/s, ${SECS}s each, $ROUNDS rounds)" >&2
    for _ in $(seq "$ROUNDS"); do
        sweep "${a[@]}"
        sweep "${b[@]}"
    done
    echo "${a[0]} ${b[0]}" >>"$TMP/sweeps"
}

# single NAME PID TOOL ARGS: warm-up, then $ROUNDS runs
single() {
    echo "bench: $1 (${SECS}s runs, warm-up + $ROUNDS)" >&2
    run "$1-warmup" "${@:2}"
    for _ in $(seq "$ROUNDS"); do
        run "$@"
    done
    echo "$1" >>"$TMP/singles"
}

# ---- the suite ----------------------------------------------------------------------------

NGX=http://127.0.0.1:$NGX_PORT
RCU=http://127.0.0.1:$RC_PORT
L=(-c "$CONNS" -d "$SECS")

if [ -n "$RC_PID" ]; then
    versus event-ringcount "$RC_PID" rb event "$RCU/event" "${L[@]}" -- \
        event-nginx "$NGX_PID" rb event "$NGX/event" --no-verify "${L[@]}"
    versus event-p$DEPTH-ringcount "$RC_PID" rb event "$RCU/event" "${L[@]}" -p "$DEPTH" -- \
        event-p$DEPTH-nginx "$NGX_PID" rb event "$NGX/event" --no-verify "${L[@]}" -p "$DEPTH"
fi
if [ $HAVE_WRK = 1 ]; then
    versus gen-ringbench "$NGX_PID" rb event "$NGX/event" --no-verify "${L[@]}" -- \
        gen-wrk "$NGX_PID" wrk -c"$CONNS" -d"${SECS}s" -s "$TMP/event.lua" "$NGX/event"
    versus gen-p$DEPTH-ringbench "$NGX_PID" rb event "$NGX/event" --no-verify "${L[@]}" \
        -p "$DEPTH" -- \
        gen-p$DEPTH-wrk "$NGX_PID" wrk -c"$CONNS" -d"${SECS}s" -s "$TMP/pipeline.lua" \
        "$NGX/event" -- "$DEPTH"
    [ -n "$RC_PID" ] &&
        versus gen-rc-ringbench "$RC_PID" rb event "$RCU/event" "${L[@]}" -- \
            gen-rc-wrk "$RC_PID" wrk -c"$CONNS" -d"${SECS}s" -s "$TMP/event.lua" "$RCU/event"
else
    echo "bench: wrk not installed: skipping the load generator comparison" >&2
fi
if [ -n "$RC_PID" ]; then
    if [ -n "${BENCH_DB:-}" ]; then
        versus increment-v2 "$RC_PID" rb increment "$RCU/api/v2/increment" "${L[@]}" -- \
            increment-v1 "$RC_PID" rb increment "$RCU/api/v1/increment" "${L[@]}"
    else
        single increment-v2 "$RC_PID" rb increment "$RCU/api/v2/increment" "${L[@]}"
    fi
    RINGCOUNT_ADMIN_KEY=$ADMIN_KEY single counter "$RC_PID" rb counter "$RCU/" "${L[@]}"
fi
if [ $HAVE_REDIS = 0 ]; then
    echo "bench: redis-server/redis-benchmark not installed (Debian: redis-server):" \
        "skipping the Redis comparison" >&2
fi
if [ -n "$REDIS_MEM_PID" ]; then
    PAIRS=redis-pairs versus incr-ringcount-v2 "$RC_PID" rb increment "$RCU/api/v2/increment" \
        "${L[@]}" -- incr-redis "$REDIS_MEM_PID" redis "$REDIS_PORT" "$(redis_n "$REDIS_PORT")"
fi
if [ -n "$REDIS_AOF_PID" ]; then
    # with BENCH_DB v2 is the like of everysec: answered at once, flushed to PostgreSQL every
    # 10 ms (--flush-ms); v1, answered after COMMIT, would be the like of appendfsync always
    p=$((REDIS_PORT + 1))
    PAIRS=redis-pairs versus incr-aof-ringcount-v2 "$RC_PID" rb increment \
        "$RCU/api/v2/increment" "${L[@]}" -- \
        incr-redis-aof "$REDIS_AOF_PID" redis "$p" "$(redis_n "$p")"
fi
if [ -n "$RC_PID" ]; then
    NGX_WORKER=$(pgrep -P "$NGX_PID" | head -1)
    sweep_versus sweep-event-ringcount "$RC_PID" event "$RCU/event" "${L[@]}" -- \
        sweep-event-nginx "${NGX_WORKER:-$NGX_PID}" event "$NGX/event" --no-verify "${L[@]}"
fi

# ---- the report ---------------------------------------------------------------------------

# median of the numbers on stdin, one a line (0 if none)
med() { sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2];
    else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# median of column $2 of file $1
median() { awk -v c="$2" '{ print $c }' "$1" | med; }

# median over rounds of (A col $3 / B col $3), optionally per core (col $4)
ratio() { paste -d' ' "$TMP/$1.runs" "$TMP/$2.runs" | awk -v c="$3" -v k="${4:-0}" '{
    a = $c; b = $(c + 7); if (k) { a = a / $(k); b = b / $(k + 7) }
    if (b > 0) print a / b }' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) print "-"; else if (NR % 2) printf "%.2f", v[(NR + 1) / 2];
    else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

row() {
    local f="$TMP/$1.runs"
    [ -f "$f" ] || return
    local rps p99 sc lc v
    rps=$(median "$f" 2)
    p99=$(median "$f" 3)
    sc=$(median "$f" 4)
    lc=$(median "$f" 5)
    v=$(awk '{ print $7 }' "$f" | sort -u | paste -sd/)
    awk -v n="$1" -v r="$rps" -v p="$p99" -v sc="$sc" -v lc="$lc" -v e="$(awk '{ s += $6 } END { print s + 0 }' "$f")" \
        -v v="$v" 'BEGIN { printf "| %s | %.0f | %.2f | %.2f | %.0f | %.2f | %.0f | %d | %s |\n",
        n, r, p, sc, (sc > 0 ? r / sc : 0), lc, (lc > 0 ? r / lc : 0), e, v }'
}

# sweep_table A B: one row per offered rate of $RATES: medians over rounds of each side's
# achieved req/s, p99 and server CPU per request, and the median per-round ratio of CPU per
# request A/B
sweep_table() {
    local fa="$TMP/$1.sweep" fb="$TMP/$2.sweep" r
    [ -f "$fa" ] && [ -f "$fb" ] || return
    local na=${1#sweep-} nb=${2#sweep-}
    echo "| offered req/s | $na achieved | p99 ms | server CPU µs/req | req per server CPU-s | $nb achieved | p99 ms | server CPU µs/req | req per server CPU-s | CPU per request $na/$nb |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for r in ${RATES//,/ }; do
        local cols=() f c x
        for f in "$fa" "$fb"; do
            for c in 3 5 6; do
                cols+=("$(awk -v r="$r" -v c="$c" '$2 == r { print $c }' "$f" | med)")
            done
        done
        x=$(awk -v r="$r" 'NR == FNR { if ($2 == r) a[$1] = $6; next }
            $2 == r && ($1 in a) && $6 > 0 { print a[$1] / $6 }' "$fa" "$fb" | med)
        awk -v r="$r" -v a1="${cols[0]}" -v a2="${cols[1]}" -v a3="${cols[2]}" \
            -v b1="${cols[3]}" -v b2="${cols[4]}" -v b3="${cols[5]}" -v x="$x" 'BEGIN {
            printf "| %.0f | %.0f | %.2f | %.2f | %.0f | %.0f | %.2f | %.2f | %.0f | %.2f |\n",
                r, a1, a2, a3, (a3 > 0 ? 1e6 / a3 : 0), b1, b2, b3, (b3 > 0 ? 1e6 / b3 : 0), x }'
    done
}

# table PAIRS_FILE: the runs of each pair, then their ratios
pairs_tables() {
    echo "| run | req/s | p99 ms | server cores | req/s per server core | load cores | req/s per load core | errors | verify |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
    while read -r a b; do
        row "$a"
        row "$b"
    done <"$1" 2>/dev/null
    [ "$1" = "$TMP/pairs" ] && while read -r a; do
        row "$a"
    done <"$TMP/singles" 2>/dev/null
    echo
    echo "| A vs B | req/s A/B | per server core A/B | per load core A/B |"
    echo "|---|---:|---:|---:|"
    while read -r a b; do
        echo "| $a vs $b | $(ratio "$a" "$b" 2) | $(ratio "$a" "$b" 2 4) | $(ratio "$a" "$b" 2 5) |"
    done <"$1" 2>/dev/null
}

{
    echo "# ringcount benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), Linux $(uname -r)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "- command: \`make bench\` (BENCH_QUICK=$QUICK BENCH_SECS=$SECS BENCH_ROUNDS=$ROUNDS BENCH_CONNS=$CONNS BENCH_DEPTH=$DEPTH BENCH_RATES=$RATES BENCH_REDIS_AOF=$REDIS_AOF${BENCH_DB:+ BENCH_DB=...})"
    [ "$QUICK" = 1 ] && echo "- **BENCH_QUICK=1: a smoke run of the script; these numbers mean nothing**"
    echo "- pinning: server \`taskset -c $SERVER_CPU\` (ringcount --workers 1, nginx 1 worker, redis-server), load \`taskset -c $LOAD_CPU\` (ringbench -t 1, wrk -t1, redis-benchmark)"
    echo "- each comparison: one warm-up per side, then $ROUNDS alternating rounds of ${SECS}s; medians"
    echo
    pairs_tables "$TMP/pairs"
    echo
    echo "ringcount runs are verified by ringbench against /stats (event) or the count (increment,"
    echo "counter) after every run; nginx runs send the same requests with --no-verify."
    echo "gen-*: load generators against nginx; gen-rc-*: against ringcount. wrk runs: one thread,"
    echo "the 1MRC requests of shared/bench/event.lua and pipeline.lua (wrk does not measure"
    echo "pipelined latency: its p99 there is not comparable)."
    echo "Plots: bench-results/<run>-<n>.svg (throughput and p99 per second); JSON: <run>-<n>.json."
    echo
    echo "## Increments: ringcount vs Redis INCR (saturated)"
    echo
    if [ -s "$TMP/redis-pairs" ]; then
        pairs_tables "$TMP/redis-pairs"
        echo
        echo "incr-*ringcount-v2: \`ringbench increment URL/api/v2/increment -c $CONNS -d $SECS\` (answered"
        echo "204 at once, checked against the count). incr-redis*: \`redis-benchmark -h 127.0.0.1 -p PORT -c $CONNS -n N -P 1 -t incr --csv\`"
        echo "(one thread, no pipelining, N from a calibration run for ~${SECS}s; the key must grow by"
        echo "exactly N), against a redis-server $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')"
        echo "started for this run on 127.0.0.1:$REDIS_PORT (in-memory: \`--save '' --appendonly no\`) and"
        echo "127.0.0.1:$((REDIS_PORT + 1)) (incr-redis-aof: \`--save '' --appendonly yes --appendfsync"
        echo "everysec\`: about a second of increments can be lost), stopped at the end. Server CPU: utime+stime"
        echo "of every thread (and child) from /proc/PID/task/*/stat over the run. Redis is measured"
        echo "saturated only: redis-benchmark has no rate option, so there is no open-loop sweep for it."
        if [ -n "${BENCH_DB:-}" ]; then
            echo "ringcount ran with --db: v2 increments reach PostgreSQL within --flush-ms (10 ms), as"
            echo "everysec's reach the AOF within about a second; durable-on-answer v1 (after COMMIT) is"
            echo "increment-v1 above, the like of Redis's appendfsync always (not run). PostgreSQL's own CPU"
            echo "is not in ringcount's server cores (another process, not pinned), Redis's AOF writes are."
        elif [ -n "$REDIS_AOF_PID" ]; then
            echo "ringcount ran memory-only (no BENCH_DB): incr-aof-* sets a persisting Redis beside a"
            echo "non-persisting ringcount, not like for like; with BENCH_DB v2 is flushed every 10 ms."
        fi
        [ "$SYS_REDIS" = 1 ] && echo "**A redis-server was answering on 127.0.0.1:6379 during this run** (not ours; if busy it shared the server CPU)."
    else
        echo "Skipped: redis-server and redis-benchmark (Debian package redis-server) not installed,"
        echo "its port in use, or ringcount did not start."
    fi
    echo
    echo "## Offered-rate sweep: server CPU per request below saturation"
    echo
    if [ -s "$TMP/sweeps" ]; then
        while read -r a b; do
            sweep_table "$a" "$b"
        done <"$TMP/sweeps"
        echo
        echo "\`ringbench event URL -c $CONNS -d $SECS --rate-sweep $RATES --server-pid PID\` (open loop:"
        echo "latency from the intended send times; nginx with --no-verify, its worker's PID), ringcount"
        echo "and nginx alternating, $ROUNDS rounds, medians; CPU per request A/B is the median of the"
        echo "per-round ratios (below 1: ringcount spends less server CPU on a request). Plots:"
        echo "bench-results/sweep-event-<server>-<n>-sweep.svg."
    else
        echo "Skipped: ringcount did not start."
    fi
} >"$OUT/results.md"

cat "$OUT/results.md"
exit $FAILED
