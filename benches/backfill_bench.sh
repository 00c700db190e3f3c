#!/usr/bin/env bash
# bge_backfill against the engine's batched path on the same rows, in one cluster and one run:
#   array form: SELECT bge_embed(array_agg(body)) over the whole table (one call, batched);
#   backfill:   CALL bge_backfill(...) filling the table's NULL column, a commit per batch.
# Rounds alternate between the two; medians of tokens/s are reported with their ratio.
#
#   benches/backfill_bench.sh [ROWS] [ROUNDS]    (defaults 1000 passages of benches/corpus.txt, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000}
ROUNDS=${2:-3}
export PG_BGE_PG=${PG_BGE_PG:-15}
MODELS=/tmp/pg_bge_bench_models
python3 scripts/models/make_test_models.py "$("$(. scripts/postgres/versions.sh; pg_config_of "$PG_BGE_PG")" --sharedir)/bge_models/all-MiniLM-L6-v2" "$MODELS" >/dev/null
chmod -R a+rX "$MODELS"
scripts/postgres/cluster.sh start "bge.model_dir = '$MODELS'" >/dev/null
trap 'scripts/postgres/cluster.sh stop' EXIT
sql() { scripts/postgres/cluster.sh psql -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
sql -c "CREATE EXTENSION pg_bge"
python3 - "$ROWS" >/tmp/pg_bge_backfill_bench.csv <<'EOF'
import csv, sys
lines = [l.strip() for l in open("benches/corpus.txt", encoding="utf-8") if l.strip()]
w = csv.writer(sys.stdout)
for i in range(int(sys.argv[1])):
    w.writerow([i, lines[i % len(lines)]])
EOF
chmod a+r /tmp/pg_bge_backfill_bench.csv
sql -c "CREATE TABLE passages (id int PRIMARY KEY, body text NOT NULL, emb real[])"
sql -c "\\copy passages (id, body) FROM '/tmp/pg_bge_backfill_bench.csv' WITH (FORMAT csv)"
TOKENS=$(sql -c "SELECT sum(bge_token_count(body)) FROM passages")
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) cores; $ROWS rows, $TOKENS tokens"
sql -c "SELECT count(*) FROM bge_embed(ARRAY['warm up'])" >/dev/null
seconds() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo "scale=3; ($t1 - $t0) / 1000000000" | bc; }
array_times=() backfill_times=()
for r in $(seq 1 "$ROUNDS"); do
    array_times+=("$(seconds sql -c "SELECT count(*) FROM bge_embed((SELECT array_agg(body ORDER BY id) FROM passages))")")
    sql -c "UPDATE passages SET emb = NULL" -c "VACUUM passages"
    backfill_times+=("$(seconds sql -c "SET client_min_messages = warning" -c "CALL bge_backfill('passages', 'body', 'emb')")")
    [ "$(sql -c "SELECT count(*) FROM passages WHERE emb IS NULL")" = 0 ] || { echo "backfill left rows NULL" >&2; exit 1; }
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
A=$(median "${array_times[@]}") B=$(median "${backfill_times[@]}")
echo "array form: ${array_times[*]} s -> median $(echo "$TOKENS / $A" | bc) tokens/s"
echo "backfill:   ${backfill_times[*]} s -> median $(echo "$TOKENS / $B" | bc) tokens/s"
echo "backfill / array form: $(echo "scale=3; $A / $B" | bc)"
