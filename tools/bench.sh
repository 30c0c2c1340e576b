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
#
# Output under bench-results/ (git-ignored): results.md (the tables, date, machine, command),
# one ringbench JSON line per run (*.json), and per-second CSV + SVG plots (*.csv, *.svg).
# Settings (environment): BENCH_SECS (5), BENCH_ROUNDS (3), BENCH_CONNS (256),
# BENCH_DEPTH (16), SERVER_CPU (1), LOAD_CPU (0), BENCH_DB, RC_PORT (18180), NGX_PORT (18181).
# Exit 1 if any ringbench run failed (a verification mismatch, error responses, socket errors,
# or nothing answered); the tables are written anyway.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

SECS=${BENCH_SECS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNS:-256}
DEPTH=${BENCH_DEPTH:-16}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
RC_PORT=${RC_PORT:-18180}
NGX_PORT=${NGX_PORT:-18181}
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
    echo "${a[0]} ${b[0]}" >>"$TMP/pairs"
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

# ---- the report ---------------------------------------------------------------------------

# median of column $2 of file $1
median() { awk -v c="$2" '{ print $c }' "$1" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2];
    else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

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

{
    echo "# ringcount benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), Linux $(uname -r)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "- command: \`make bench\` (BENCH_SECS=$SECS BENCH_ROUNDS=$ROUNDS BENCH_CONNS=$CONNS BENCH_DEPTH=$DEPTH)"
    echo "- pinning: server \`taskset -c $SERVER_CPU\` (ringcount --workers 1, nginx 1 worker), load \`taskset -c $LOAD_CPU\` (ringbench -t 1, wrk -t1)"
    echo "- each comparison: one warm-up per side, then $ROUNDS alternating rounds of ${SECS}s; medians"
    echo
    echo "| run | req/s | p99 ms | server cores | req/s per server core | load cores | req/s per load core | errors | verify |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
    while read -r a b; do
        row "$a"
        row "$b"
    done <"$TMP/pairs" 2>/dev/null
    while read -r a; do
        row "$a"
    done <"$TMP/singles" 2>/dev/null
    echo
    echo "| A vs B | req/s A/B | per server core A/B | per load core A/B |"
    echo "|---|---:|---:|---:|"
    while read -r a b; do
        echo "| $a vs $b | $(ratio "$a" "$b" 2) | $(ratio "$a" "$b" 2 4) | $(ratio "$a" "$b" 2 5) |"
    done <"$TMP/pairs" 2>/dev/null
    echo
    echo "ringcount runs are verified by ringbench against /stats (event) or the count (increment,"
    echo "counter) after every run; nginx runs send the same requests with --no-verify."
    echo "gen-*: load generators against nginx; gen-rc-*: against ringcount. wrk runs: one thread,"
    echo "the 1MRC requests of shared/bench/event.lua and pipeline.lua (wrk does not measure"
    echo "pipelined latency: its p99 there is not comparable)."
    echo "Plots: bench-results/<run>-<n>.svg (throughput and p99 per second); JSON: <run>-<n>.json."
} >"$OUT/results.md"

cat "$OUT/results.md"
exit $FAILED
