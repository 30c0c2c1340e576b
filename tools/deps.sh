#!/usr/bin/env bash
# Install the Debian packages ringcount needs to build, test and run (as root), or print the
# exact apt-get line to run (otherwise). Idempotent: installed packages are skipped.
set -euo pipefail
pkgs=(build-essential liburing-dev libpq-dev libck-dev libcriterion-dev postgresql-15 curl
      clang-14 libclang-rt-14-dev # clang: the libFuzzer targets of fuzz/ (make fuzz, make test)
      prometheus                  # promtool: tests/integ/test_ops checks a live /metrics scrape
      nginx-light                 # tests/integ/test_ratelimit: rate limits behind a real proxy
      systemd)                    # systemd-analyze: test_ops and test_install verify the unit
# Extras, only in CI (CI=true) or when RINGCOUNT_DEPS_EXTRA is set. Without them these tests
# skip, and in CI tools/run-tests.sh fails the run on any skip, so CI must have them:
#   chromium (~300 MB): the status page of tests/integ/test_statuspage.c and the cross-origin
#     page of test_cors.c run in headless Chromium;
#   nodejs (Debian 12: 18, which has fetch): test_ops runs the status page's script in node.
# RINGCOUNT_DEPS_EXTRA may also list more packages; a bare 1/true/yes just asks for the extras.
# (The other skips: promtool and systemd-analyze come from the packages above; test_faults
# needs an RLIMIT_NOFILE hard limit of 10,500, which root raises itself.)
if [ "${RINGCOUNT_DEPS_EXTRA:-}" ] || { [ "${CI:-}" ] && [ "${CI}" != false ]; }; then
  pkgs+=(chromium nodejs)
  for p in ${RINGCOUNT_DEPS_EXTRA:-}; do
    case "$p" in 1|true|yes) ;; *) pkgs+=("$p") ;; esac
  done
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
