#!/usr/bin/env bash
# `make run`: a local PostgreSQL under var/pg (as the postgres user), then ringcount on :8080.
# Extra flags: make run ARGS='--workers 2'. Memory-only (no --db): make run RINGCOUNT_RUN_DB=0.
# An existing database instead: make run ARGS='--db postgresql://user@host/db' RINGCOUNT_RUN_DB=0.
set -euo pipefail
cd "$(dirname "$0")/.."
dbargs=()
if [ "${RINGCOUNT_RUN_DB:-1}" != 0 ]; then
  db=$(tools/pg-local.sh var/pg start)
  echo "PostgreSQL: $db   (stop it with: tools/pg-local.sh var/pg stop)" >&2
  # what a shutdown cannot commit (database down) is kept here and replayed at the next start
  dbargs=(--db "$db" --spill-dir "${RINGCOUNT_SPILL_DIR:-var/spill}")
fi
export RINGCOUNT_ADMIN_KEY=${RINGCOUNT_ADMIN_KEY:-dev-admin-key}
echo "ringcount on http://127.0.0.1:8080  (admin key: \$RINGCOUNT_ADMIN_KEY, Ctrl-C stops)" >&2
exec build/ringcount --listen "${LISTEN:-0.0.0.0:8080}" "${dbargs[@]}" ${ARGS:-}
