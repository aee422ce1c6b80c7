#!/bin/bash
# The measurement set behind results/: the figures that the issues "Nothing lost" and "As
# fast as the disk allows" ask for, then the other profiles, then release 0.1.2 for the chart.
# NEW and OLD are Pythons with the aiodiskqueue to measure installed (not a checkout); PQ,
# if set, one with persist-queue[async] and aiodiskqueue installed, for its reference rows.
# Takes about an hour on a 2-core machine; rows are appended to results/results.csv.
set -euxo pipefail
NEW=${NEW:-python3}
OLD=${OLD:-/tmp/old/bin/python}
RUN=$(cd "$(dirname "$0")" && pwd)/run.py
cd /tmp  # so that no source checkout shadows the installed packages
run() { "$NEW" "$RUN" --references none "$@" || true; }  # a failed row is in the CSV too

# Throughput of the default and the SQLite engine by item count, crash-safe level.
run --engines DbmEngine,SqliteEngine --items 1000,10000,100000 --repeat 3
run --engines DbmEngine,SqliteEngine --items 1000000
# Durability levels and group commit against one transaction per item.
run --engines DbmEngine,SqliteEngine --items 10000 --repeat 3 \
    --durability process-crash,power-loss --commit per-item
run --engines DbmEngine,SqliteEngine --items 10000 --repeat 3 --durability power-loss
run --engines DbmEngine,SqliteEngine --items 100000 --durability power-loss --commit group,per-item
run --engines DbmEngine,SqliteEngine --items 100000 --commit per-item
# The references.
"$NEW" "$RUN" --engines none --references asyncio.Queue,file-append --items 1000,10000,100000,1000000
"$NEW" "$RUN" --engines none --references file-append-hop --items 1000,10000,100000
"$NEW" "$RUN" --engines none --references file-append,file-append-hop --items 10000 \
    --durability power-loss
# Memory: a million items held, then reopened and drained in a fresh process.
run --engines DbmEngine,SqliteEngine --profiles fill --items 1000000 --timeout 1500
run --engines PickledList --profiles fill --items 1000,10000,100000 --timeout 200
# Where PickledList stops being a good choice.
run --engines PickledList --items 1000,3000,10000,30000 --timeout 200
# The other profiles.
run --engines DbmEngine,SqliteEngine --profiles minimal,heavy,producers,consumers \
    --items 1000,10000,100000
run --engines PickledList --profiles minimal,heavy,producers,consumers --items 1000,10000 \
    --timeout 120
# Release 0.1.2, whose DbmEngine on dbm.dumb is O(n) per get: small counts only.
"$OLD" "$RUN" --references none --items 200,500,1000,2000 --timeout 300 || true
"$OLD" "$RUN" --references none --engines SqliteEngine --items 10000 --timeout 300 || true
# persist-queue's AsyncSQLiteQueue, a peer, in a venv of its own.
if [ -n "${PQ:-}" ]; then
    "$PQ" "$RUN" --engines none --references persist-queue --items 1000,10000 \
        --label "persist-queue 1.1.0" || true
fi
echo "all done"
