#!/bin/sh
# include-graph.sh — the module graph of src/ and uring/ from their `#include "..."` lines, and
# a failure if it has a cycle (docs/DESIGN.md "Layers": pure leaves -> stores -> metrics/persist
# -> session -> handlers -> server -> main, never back up).
#
# A file belongs to the module of the shortest `_`-separated prefix of its name that has a
# header in the same directory (persist_flush.c and persist_int.h are `persist`, status_page.c
# is `status_page`). Module A depends on B when a file of A includes B's header. A .c file that
# declares a function of another module itself (a prototype at file scope instead of the
# header) would hide an edge, so such lines fail too.
#
# Usage: tools/include-graph.sh [-v]   (-v also prints the edges, "A B" one per line)
# Exit: 0 acyclic; 1 a cycle (tsort names its modules) or a hidden prototype.
set -eu
cd "$(dirname "$0")/.."
verbose=${1:-}

module() { # module of file path $1
    dir=$(dirname "$1")
    base=$(basename "$1")
    base=${base%.*}
    pre=""
    rest=$base
    while :; do
        part=${rest%%_*}
        pre=${pre:+${pre}_}$part
        if [ -e "$dir/$pre.h" ] || [ "$pre" = "$base" ]; then
            echo "$pre"
            return
        fi
        rest=${rest#*_}
    done
}

edges=$(mktemp)
trap 'rm -f "$edges"' EXIT
for f in src/*.c src/*.h uring/*.c uring/*.h; do
    from=$(module "$f")
    for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
        if [ -e "src/$inc" ]; then to=$(module "src/$inc")
        elif [ -e "uring/$inc" ]; then to=$(module "uring/$inc")
        else continue; fi
        [ "$from" = "$to" ] || echo "$from $to"
    done
done | sort -u >"$edges"

[ "$verbose" = "-v" ] && cat "$edges"

status=0
# tsort prints the members of each loop it finds on stderr ("input contains a loop").
loops=$(tsort <"$edges" 2>&1 >/dev/null || true)
if [ -n "$loops" ]; then
    echo "include-graph: cycle in the module graph:" >&2
    echo "$loops" | sed "s/^tsort: //;s/^-: //;s/^/  /" >&2
    status=1
fi
# A file-scope prototype in a .c file of a function whose header belongs to another module: a
# call that bypasses the include graph (e.g. `int ring_probe(char *why, size_t cap);` in main.c).
protos=$(grep -nE '^[a-z_][a-z0-9_ \*]*[ \*]([a-z_][a-z0-9_]*)\([^;{]*\);[[:space:]]*$' \
             src/*.c uring/*.c | grep -vE ':(static|typedef|return) ' || true)
echo "$protos" | while IFS= read -r line; do
    [ -n "$line" ] || continue
    file=${line%%:*}
    name=$(echo "${line#*:*:}" | sed -E 's/^[^(]*[ *]([a-z_][a-z0-9_]*)\(.*/\1/')
    for h in $(grep -lE "[ *]$name\(" src/*.h uring/*.h 2>/dev/null || true); do
        if [ "$(module "$h")" != "$(module "$file")" ]; then
            echo "include-graph: $line: declared by $h, include it" >&2
            echo x
        fi
    done
done | grep -q x && status=1
[ $status -eq 0 ] && echo "include-graph: $(wc -l <"$edges") edges between $(tr ' ' '\n' <"$edges" | sort -u | wc -l) modules, no cycle"
exit $status
