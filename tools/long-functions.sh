#!/bin/sh
# long-functions.sh — functions of src/, uring/ and tools/ over 100 lines (CONTRIBUTING: "No
# function over 100 lines"; the HTTP parser's state machine, http_parse and parse_chunked in
# src/http.c, is the one exception). A function is counted from its signature's first line to
# its closing brace in column 0 (the repository's .clang-format puts both there).
# Exit: 0 none; 1 lists them ("file:line: name: N lines").
set -eu
cd "$(dirname "$0")/.."
out=$(for f in src/*.c uring/*.c tools/*.c; do
    awk -v F="$f" '
        /^[A-Za-z_].*\(/ && !/;[[:space:]]*$/ { sig = NR; name = $0 }
        /^\{/ { start = sig ? sig : NR }
        /^\}/ && start {
            n = NR - start + 1
            fn = name; sub(/\(.*/, "", fn); sub(/.*[ *]/, "", fn)
            if (n > 100 && !(F == "src/http.c" && (fn == "http_parse" || fn == "parse_chunked")))
                printf "%s:%d: %s: %d lines\n", F, start, fn, n
            start = 0; sig = 0
        }' "$f"
done)
if [ -n "$out" ]; then
    echo "long-functions: over 100 lines (split them):" >&2
    echo "$out" | sed 's/^/  /' >&2
    exit 1
fi
echo "long-functions: none over 100 lines (src/http.c's parser excepted)"
