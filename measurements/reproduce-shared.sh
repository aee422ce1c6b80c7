#!/bin/bash
# The measurement set of the shared engines behind results/shared-engines.csv and
# results/wakeup.csv: the profiles of run.py on every engine, shared or not, the processes
# profile, a fill of 100,000 items, and wakeup.py. NEW is a Python with the aiodiskqueue to
# measure (installed, or a copy of a commit on PYTHONPATH), LABEL names it in the CSV files.
# Servers: REDIS_URL and POSTGRES_URL, by default the local ones; rows of an engine whose
# server does not answer are skipped with a note. Takes about 15 minutes on a 2-core machine.
set -euxo pipefail
NEW=${NEW:-python3}
LABEL=${LABEL:-"aiodiskqueue $("$NEW" -c 'import aiodiskqueue; print(aiodiskqueue.__version__)')"}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
POSTGRES_URL=${POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
HERE=$(cd "$(dirname "$0")" && pwd)
cd /tmp  # so that no source checkout shadows the installed packages
run() {
    # A failed row is in the CSV too.
    "$NEW" "$HERE/run.py" --label "$LABEL" --redis-url "$REDIS_URL" \
        --postgres-url "$POSTGRES_URL" --csv "$HERE/results/shared-engines.csv" \
        --chart "$HERE/results/shared-engines.png" "$@" || true
}

# Tasks in one process (medium, heavy) against 4 producer and 4 consumer processes.
run --engines SharedSqliteEngine,SqliteEngine,DbmEngine --profiles medium,heavy,processes \
    --items 10000 --repeat 3
run --engines RedisEngine,PostgresEngine --profiles medium,heavy,processes --items 10000 \
    --repeat 3 --references none
# Fill, close, reopen in a fresh process, drain: the same queue in both processes.
run --engines SharedSqliteEngine,RedisEngine,PostgresEngine,SqliteEngine --profiles fill \
    --items 100000 --references none --timeout 900
# A waiting get() in another process: its wake-up delay, and its CPU while idle.
"$NEW" "$HERE/wakeup.py" --label "$LABEL" --redis-url "$REDIS_URL" \
    --postgres-url "$POSTGRES_URL" || true
echo "all done"
