#!/usr/bin/env bash
# One call per row, serial against parallel, in one run: `SELECT bge_embed(body, model) FROM t`
# with PostgreSQL's default parallel settings (pg_bge's COSTs and planner hook give it a
# Gather) against max_parallel_workers_per_gather = 0, against the batched array form, and
# CREATE TABLE AS SELECT both ways. Medians of REPEATS runs; checks the vectors agree bitwise.
#
#   bash benches/parallel_bench.sh [REPEATS=3]
# Needs the extension installed (scripts/demo.sh or scripts/test.sh did that). Uses the scratch
# cluster of scripts/postgres/cluster.sh (restarted) of the major PG_BGE_PG picks (default 15), with
# default settings (bge.threads = 0: all cores for the serial scan, one per parallel process).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-3}
MODEL=all-MiniLM-L6-v2
[ -f benches/corpus.txt ] || python3 benches/make_corpus.py benches/corpus.txt 1000
cp benches/corpus.txt /tmp/pg_bge_bench_corpus.txt && chmod a+r /tmp/pg_bge_bench_corpus.txt

scripts/postgres/cluster.sh start >/dev/null
trap 'scripts/postgres/cluster.sh stop' EXIT
scripts/postgres/cluster.sh psql -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION IF NOT EXISTS pg_bge;
CREATE TABLE t (id serial PRIMARY KEY, body text);
COPY t (body) FROM '/tmp/pg_bge_bench_corpus.txt' WITH (FORMAT text);
ANALYZE t;
SQL
echo "table t: $(scripts/postgres/cluster.sh psql -tA -c "SELECT count(*) || ' rows, ' || pg_size_pretty(pg_relation_size('t')) FROM t")"
echo "plan with default settings:"
scripts/postgres/cluster.sh psql -tA -c "EXPLAIN (COSTS OFF) SELECT bge_embed(body, '$MODEL') FROM t" | sed 's/^/    /'

serial="SET max_parallel_workers_per_gather = 0;"
{
    echo "SELECT bge_embed('warm up', '$MODEL');"
    echo '\timing on'
    for _ in $(seq "$REPEATS"); do echo "SELECT bge_embed(body, '$MODEL') FROM t;"; done
    echo "$serial"
    for _ in $(seq "$REPEATS"); do echo "SELECT bge_embed(body, '$MODEL') FROM t;"; done
    echo "RESET max_parallel_workers_per_gather;"
    for _ in $(seq "$REPEATS"); do echo "SELECT e FROM bge_embed((SELECT array_agg(body ORDER BY id) FROM t), '$MODEL') AS e;"; done
    for i in $(seq "$REPEATS"); do echo "CREATE TABLE ctas_par_$i AS SELECT id, bge_embed(body, '$MODEL') AS e FROM t;"; done
    echo "$serial"
    for i in $(seq "$REPEATS"); do echo "CREATE TABLE ctas_ser_$i AS SELECT id, bge_embed(body, '$MODEL') AS e FROM t;"; done
} > /tmp/pg_bge_parallel_bench.sql
times=$(scripts/postgres/cluster.sh psql -q -o /dev/null -f /tmp/pg_bge_parallel_bench.sql | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
same=$(scripts/postgres/cluster.sh psql -tA -c "SELECT count(*) FILTER (WHERE p.e = s.e) || '/' || count(*) FROM ctas_par_1 p JOIN ctas_ser_1 s USING (id)")
python3 - "$REPEATS" "$times" "$same" <<'PY'
import statistics, sys
r = int(sys.argv[1])
t = [float(x) / 1000 for x in sys.argv[2].split()]
# Drop the timings of the SET/RESET statements (sub-millisecond) between the groups.
t = [x for x in t if x > 0.05]
names = ["SELECT, default settings (parallel)", "SELECT, max_parallel_workers_per_gather = 0",
         "array form bge_embed(text[], model)", "CREATE TABLE AS, default (parallel)", "CREATE TABLE AS, serial"]
med = [statistics.median(t[i * r:(i + 1) * r]) for i in range(len(names))]
for n, m in zip(names, med):
    print(f"{n:46s} {m:7.2f} s   {med[1] / m:5.2f}x the serial scan")
print(f"vectors of the parallel and serial CREATE TABLE AS equal bitwise: {sys.argv[3]}")
PY
