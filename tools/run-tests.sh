#!/usr/bin/env bash
# Run every unit and integration test binary of each build dir given (e.g. build build/asan),
# print each Criterion summary, then one final "N passed, N failed" line. Exit 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0 failed=0 bad=()
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for dir in "$@"; do
  for t in "$dir"/tests/unit/test_* "$dir"/tests/integ/test_*; do
    [ -x "$t" ] || continue
    name="$t"
    log=$(mktemp)
    # The integration tests start this build's own server and load generator.
    RINGCOUNT_BIN="$dir/ringcount" RINGBENCH_BIN="$dir/ringbench" \
      timeout 600 "$t" --jobs 2 >"$log" 2>&1
    rc=$?
    summary=$(grep -a "Synthesis:" "$log" | tail -1)
    p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$summary")
    f=$(sed -n 's/.*Failing: \([0-9]*\).*Crashing: \([0-9]*\).*/\1 \2/p' <<<"$summary")
    p=${p:-0}; set -- $f; fl=$(( ${1:-0} + ${2:-0} ))
    if [ $rc -ne 0 ] || [ -z "$summary" ]; then
      [ $fl -eq 0 ] && fl=1
      bad+=("$name")
      sed 's/^/    /' "$log" | tail -60
    fi
    echo "$name: ${summary:-no summary (exit $rc)}"
    passed=$((passed + p)); failed=$((failed + fl))
    rm -f "$log"
  done
done
# libFuzzer targets (make fuzz-bin; FUZZ_BUILD set by `make test`): each for FUZZ_SMOKE_SECONDS
# from its seed corpus; fuzz/run.sh prints a Criterion-style Synthesis line counted like a binary.
if [ -n "${FUZZ_BUILD:-}" ]; then
  log=$(mktemp)
  fuzz/run.sh "$FUZZ_BUILD" "${FUZZ_SMOKE_SECONDS:-2}" >"$log" 2>&1
  rc=$?
  cat "$log"
  summary=$(grep -a "Synthesis:" "$log" | tail -1)
  p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$summary")
  f=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$summary")
  p=${p:-0}; f=${f:-0}
  if [ $rc -ne 0 ] || [ -z "$summary" ]; then
    [ "$f" -eq 0 ] && f=1
    bad+=("fuzz")
  fi
  passed=$((passed + p)); failed=$((failed + f))
  rm -f "$log"
fi
[ ${#bad[@]} -gt 0 ] && echo "failing: ${bad[*]}"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
