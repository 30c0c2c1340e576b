#!/usr/bin/env bash
# Server CPU per request at partial load, side by side with nginx `return 204` (README
# "Batching at partial load"): for each --batch-wait-us value, a ringcount on CPU 1, then nginx
# on CPU 1, each swept by ringbench on CPU 0 (500 connections, 5 s per offered rate), in
# alternation. Usage: tools/partial-load.sh [ROUNDS] [BATCH_WAIT_US...]   (default 1; 0 300 500)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}; shift || true
waits=("$@"); [ ${#waits[@]} -gt 0 ] || waits=(0 300 500)
conf=../shared/bench/nginx-204.conf
[ -f "$conf" ] || { echo "needs $conf (nginx: apt-get install nginx-light)" >&2; exit 1; }
sweep() { # label pid url
  taskset -c 0 build/ringbench event "$3" -c 500 -d 5 --rate-sweep 20000,50000 --server-pid "$2" \
    --no-verify 2>/dev/null | grep '^sweep  ' | grep -v offered | sed "s/^sweep/$1/"; }
d=$(mktemp -d)
taskset -c 1 nginx -p "$d/" -c "$(realpath $conf)" >/dev/null 2>&1 &
trap 'pkill -f "nginx: master process nginx -p $d/" || true; rm -rf "$d"' EXIT
sleep 1; np=$(pgrep -f "nginx: worker" | head -1)
echo "label          offered/s   achieved/s    p50_ms    p99_ms    cpu_us/req   errors"
port=18600
for _ in $(seq "$rounds"); do
  for bw in "${waits[@]}"; do
    port=$((port + 1))
    taskset -c 1 build/ringcount --listen 127.0.0.1:$port --workers 1 --batch-wait-us "$bw" >/dev/null 2>&1 &
    rp=$!
    for _ in $(seq 50); do curl -sf -o /dev/null localhost:$port/livez && break; sleep 0.1; done
    sweep "rc-bw$bw" $rp http://127.0.0.1:$port/event
    kill $rp; wait $rp 2>/dev/null || true
    sweep "nginx  " "$np" http://127.0.0.1:18081/event
  done
done
