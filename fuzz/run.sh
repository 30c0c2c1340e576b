#!/usr/bin/env bash
# Run each libFuzzer target of BUILD_DIR (made by `make fuzz-bin`) for SECONDS, starting from its
# committed seeds (fuzz/corpus/<target>, also the regression set: every file there runs first)
# plus the inputs earlier runs found (BUILD_DIR/corpus/<target>). A crash, leak, sanitizer
# report, broken invariant or hang (one input over 25 s: generous, because a starved 2-vCPU CI
# machine once stalled a 40 ms input past 10 s) fails the run; its input is saved as
# BUILD_DIR/crashes/<target>-crash-<sha1> (replay: BUILD_DIR/fuzz_<target> FILE).
# Prints one line per target and a Criterion-style "Synthesis:" line (tools/run-tests.sh adds it
# to the totals). Exit 1 if any target failed.
#   usage: fuzz/run.sh BUILD_DIR SECONDS [TARGET...]    (TARGET: http json decimal router session)
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: fuzz/run.sh BUILD_DIR SECONDS [TARGET...]}
secs=${2:?usage: fuzz/run.sh BUILD_DIR SECONDS [TARGET...]}
shift 2
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(http json decimal router session)

# Longest input per target: past the limits each parser enforces (8 KiB request line, a 256-byte
# userId, 39-digit numbers), small enough to keep executions fast.
declare -A maxlen=([http]=16384 [json]=4096 [decimal]=256 [router]=1024 [session]=16384)
declare -A dict=([http]=http [json]=json [decimal]=json [router]=http [session]=http)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
passed=0 failed=0
mkdir -p "$dir/crashes"
for t in "${targets[@]}"; do
  bin="$dir/fuzz_$t"
  if [ ! -x "$bin" ]; then
    echo "fuzz_$t: missing $bin (run: make fuzz-bin)"
    failed=$((failed + 1))
    continue
  fi
  work="$dir/corpus/$t"
  mkdir -p "$work"
  log=$(mktemp)
  "$bin" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -max_len="${maxlen[$t]:-4096}" \
    -dict="fuzz/${dict[$t]:-http}.dict" -artifact_prefix="$dir/crashes/$t-" -print_final_stats=1 \
    "$work" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -ao 'cov: [0-9]*' "$log" | tail -1)
  if [ $rc -eq 0 ]; then
    echo "fuzz_$t: ${runs:-?} inputs in ${secs}s, ${cov:-cov: ?}, no crash"
    passed=$((passed + 1))
  else
    echo "fuzz_$t: FAILED (exit $rc)"
    grep -a -m1 -B2 -A30 'ERROR\|invariant failed\|SUMMARY' "$log" | sed 's/^/    /' | head -50
    grep -a 'Test unit written to' "$log" | sed 's/^/    /'
    failed=$((failed + 1))
  fi
  rm -f "$log"
done
echo "[====] Synthesis: Tested: $((passed + failed)) | Passing: $passed | Failing: $failed | Crashing: 0"
[ $failed -eq 0 ]
