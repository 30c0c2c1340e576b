#!/usr/bin/env bash
# Run every unit and integration test binary of each build dir given (e.g. build build/asan),
# print each Criterion summary, then one final "N passed, N failed, N skipped" line. Exit 1 on
# any failure; with CI set (and not "false") any skip fails the run too, so a missing tool
# cannot hide a test there (tools/deps.sh installs what the tests need when CI is set).
#
# Skips: Criterion's Synthesis line has no skipped count (2.4.1), but with --verbose it prints
# "[SKIP] suite::test: reason" for each cr_skip_test() and each disabled test; those lines are
# counted. A test that skips only one step (tests/integ/test_install.c without systemd-analyze)
# prints such a line itself, so it counts as a skip as well.
#
# Also checks that docs/SPEC.md is ../shared/SPEC.md verbatim (the contract kept in the repo;
# ../shared is beside the clone in CI and on the developers' machines), and that the module
# graph of src/ and uring/ has no cycle (tools/include-graph.sh) and that no function is over
# 100 lines (tools/long-functions.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0 failed=0 skipped=0 bad=() skips=() why=()
ci=false
[ -n "${CI:-}" ] && [ "${CI}" != false ] && ci=true
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# One "Synthesis:" line into passed/failed; rc and a missing line make a binary fail even when
# the line says 0 failures. Criterion's "Failing" already counts the crashes ("Tested: 3 |
# Passing: 1 | Failing: 2 | Crashing: 1" is one assertion and one crash), so they are not added.
count_synthesis() { # name log rc
  local summary p f
  summary=$(grep -a "Synthesis:" "$2" | tail -1)
  p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$summary")
  f=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$summary")
  p=${p:-0}; f=${f:-0}
  if [ "$3" -ne 0 ] || [ -z "$summary" ]; then
    [ $f -eq 0 ] && f=1
    bad+=("$1")
    # the --verbose progress lines say nothing a failure report needs
    grep -av '^\[\(RUN \|PASS\)\]' "$2" | sed 's/^/    /' | tail -60
    failure_lines "$1" "$2"
  fi
  echo "$1: ${summary:-no summary (exit $3)}"
  passed=$((passed + p)); failed=$((failed + f))
}

# What a failed binary said of its failures, into why[] (printed again just above the final
# line: a CI report that keeps only the tail of the output still names the assertion that
# failed, not only the binary). Per failure Criterion prints "file:line: Assertion Failed" and
# then the message on "[----]   " lines; a crash, a timeout or a sanitizer report has its own
# line. At most 8 lines a binary, each cut at 300 characters.
failure_lines() { # name log
  local line
  while IFS= read -r line; do
    why+=("$1: ${line:0:300}")
  done < <(grep -a -A3 -E 'Assertion Failed|Unexpected signal|^\[FAIL\]|ERROR: (Address|Leak)Sanitizer|runtime error:' "$2" |
           grep -av -E '^(--|\[----\] *|\[(RUN |PASS)\].*|\[====\].*)$' | head -8)
}

# The [SKIP] lines of a log into skipped/skips, each printed under the binary's summary.
count_skips() { # name log
  local line
  while IFS= read -r line; do
    skips+=("$1: $line")
    skipped=$((skipped + 1))
    echo "    $line"
  done < <(grep -a '^\[SKIP\]' "$2")
}

if [ -f ../shared/SPEC.md ]; then
  if cmp -s docs/SPEC.md ../shared/SPEC.md; then
    passed=$((passed + 1))
    echo "spec: docs/SPEC.md is ../shared/SPEC.md"
  else
    failed=$((failed + 1)) bad+=("spec")
    echo "spec: docs/SPEC.md differs from ../shared/SPEC.md (the contract);" \
         "update it: cp ../shared/SPEC.md docs/SPEC.md"
  fi
else
  skipped=$((skipped + 1)) skips+=("spec: ../shared/SPEC.md not found, docs/SPEC.md not compared")
  echo "spec: [SKIP] ../shared/SPEC.md not found, docs/SPEC.md not compared"
fi

for check in include-graph long-functions; do
  if tools/$check.sh; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)) bad+=("$check")
  fi
done

for dir in "$@"; do
  for t in "$dir"/tests/unit/test_* "$dir"/tests/integ/test_*; do
    [ -x "$t" ] || continue
    log=$(mktemp)
    # The integration tests start this build's own server and load generator.
    RINGCOUNT_BIN="$dir/ringcount" RINGBENCH_BIN="$dir/ringbench" \
      timeout 600 "$t" --jobs 2 --verbose --color=never >"$log" 2>&1
    count_synthesis "$t" "$log" $?
    count_skips "$t" "$log"
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
  count_synthesis fuzz "$log" $rc >/dev/null
  rm -f "$log"
fi
if [ ${#bad[@]} -gt 0 ]; then
  echo "failing: ${bad[*]}"
  [ ${#why[@]} -gt 0 ] && printf '    %s\n' "${why[@]}"
fi
if [ $skipped -gt 0 ] && $ci; then
  echo "CI=$CI: a skipped test fails the run (tools/deps.sh installs what the tests need):"
  printf '    %s\n' "${skips[@]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ] && { [ $skipped -eq 0 ] || ! $ci; }
