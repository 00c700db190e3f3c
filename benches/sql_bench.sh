#!/usr/bin/env bash
# SQL-level throughput in a real PostgreSQL against the engine's own numbers, same corpus,
# same threads: `SELECT bge_embed(body) FROM t` (one call per row) against the engine one
# sequence at a time, and the array form against the engine's batched path.
#
#   bash benches/sql_bench.sh [THREADS=2] [REPEATS=3]      (PRECISION=int8 etc.: bge.precision)
# Needs the extension installed (scripts/demo.sh or scripts/test.sh did that) and a release
# build of the engine example (built here if missing). Uses the scratch cluster of
# scripts/postgres/cluster.sh (restarted) of the major PG_BGE_PG picks (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/postgres/versions.sh
THREADS=${1:-2}
REPEATS=${2:-3}
PRECISION=${PRECISION:-fp32}
MODEL_DIR="$("$(pg_config_of "$PG_BGE_PG")" --sharedir)/bge_models"
[ -f benches/corpus.txt ] || python3 benches/make_corpus.py benches/corpus.txt 1000
cargo build --release -q -p bge-engine --example throughput
chmod a+r benches/corpus.txt
cp benches/corpus.txt /tmp/pg_bge_bench_corpus.txt && chmod a+r /tmp/pg_bge_bench_corpus.txt

scripts/postgres/cluster.sh start "bge.threads = $THREADS" "bge.precision = $PRECISION" >/dev/null
trap 'scripts/postgres/cluster.sh stop' EXIT
scripts/postgres/cluster.sh psql -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION IF NOT EXISTS pg_bge;
CREATE TABLE t (id serial PRIMARY KEY, body text);
COPY t (body) FROM '/tmp/pg_bge_bench_corpus.txt' WITH (FORMAT text);
SQL

{
    echo "SELECT bge_embed('warm up');"
    # One call per row: the executor's batching (bge.executor_batching) off.
    echo "SET bge.executor_batching = off;"
    echo '\timing on'
    for _ in $(seq "$REPEATS"); do
        echo "SELECT bge_embed(body) FROM t;"
    done
    echo "RESET bge.executor_batching;"
    for _ in $(seq "$REPEATS"); do
        echo "SELECT e FROM bge_embed((SELECT array_agg(body ORDER BY id) FROM t)) AS e;"
    done
} > /tmp/pg_bge_bench.sql
times=$(scripts/postgres/cluster.sh psql -q -o /dev/null -f /tmp/pg_bge_bench.sql | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
engine=$(BGE_PRECISION=$PRECISION ./target/release/examples/throughput "$MODEL_DIR/all-MiniLM-L6-v2" benches/corpus.txt "$THREADS" "$REPEATS")
echo "$engine"
python3 - "$REPEATS" "$times" "$engine" <<'PY'
import statistics, sys
repeats = int(sys.argv[1])
times = [float(t) / 1000 for t in sys.argv[2].split()]
rows, array = statistics.median(times[:repeats]), statistics.median(times[repeats:])
engine = {l.split(":")[0]: float(l.split()[1]) for l in sys.argv[3].splitlines() if l.startswith(("batched:", "single:"))}
tokens = int(sys.argv[3].split(" tokens,")[0].rsplit(" ", 1)[1])
print(f"SQL  SELECT bge_embed(body) FROM t : {rows:7.3f} s  {tokens / rows:8.0f} tokens/s  = {engine['single'] / rows:5.1%} of the engine one at a time")
print(f"SQL  array form                    : {array:7.3f} s  {tokens / array:8.0f} tokens/s  = {engine['batched'] / array:5.1%} of the engine batched")
PY
