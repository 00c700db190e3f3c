#!/usr/bin/env bash
# Chunk tables against the engine's batched path on the same chunks, in one cluster and one run:
#   documents: benches/rag_corpus.txt joined into documents of about 2k to 20k tokens;
#   chunk table: bge_vectorize_chunks(docs, ...) from an empty chunk table until every chunk is
#                embedded (chunking in the call, embedding by the vectorizer in batches);
#   array form:  SELECT bge_embed(array_agg(chunk)) over the same chunks (one batched call).
# Rounds alternate between the two; medians of tokens/s (of the chunks) with their ratio.
#
#   benches/chunks_bench.sh [DOCUMENTS] [ROUNDS]    (defaults 12 documents, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
DOCS=${1:-12}
ROUNDS=${2:-3}
export PG_BGE_PG=${PG_BGE_PG:-15}
MODELS=/tmp/pg_bge_bench_models
python3 scripts/models/make_test_models.py "$("$(. scripts/postgres/versions.sh; pg_config_of "$PG_BGE_PG")" --sharedir)/bge_models/all-MiniLM-L6-v2" "$MODELS" >/dev/null
chmod -R a+rX "$MODELS"
scripts/postgres/cluster.sh start "bge.model_dir = '$MODELS'" "shared_preload_libraries = 'pg_bge'" >/dev/null
trap 'scripts/postgres/cluster.sh stop' EXIT
sql() { scripts/postgres/cluster.sh psql -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
sql -c "CREATE EXTENSION pg_bge"
# Documents of 2k to 20k tokens (about 4.5 characters a token): consecutive passages of the corpus.
python3 - "$DOCS" >/tmp/pg_bge_chunks_bench.csv <<'EOF'
import csv, random, sys
passages = [l.strip() for l in open("benches/rag_corpus.txt", encoding="utf-8") if l.strip()]
rng, w, at = random.Random(7), csv.writer(sys.stdout), 0
for i in range(int(sys.argv[1])):
    want, parts = rng.randint(2000, 20000) * 4.5, []
    while sum(len(p) for p in parts) < want:
        parts.append(passages[at % len(passages)])
        at += 1
    w.writerow([i, "\n\n".join(parts)])
EOF
chmod a+r /tmp/pg_bge_chunks_bench.csv
sql -c "CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL)"
sql -c "\\copy docs FROM '/tmp/pg_bge_chunks_bench.csv' WITH (FORMAT csv)"
sql -c "SELECT count(*) FROM bge_embed(ARRAY['warm up'], 'all-MiniLM-L6-v2')" >/dev/null
seconds() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo "scale=3; ($t1 - $t0) / 1000000000" | bc; }
# Waits in one session: a new connection every few milliseconds would take CPU from the
# vectorizer it is timing.
wait_embedded() {
    sql -c "DO \$\$ BEGIN WHILE EXISTS (SELECT FROM doc_chunks WHERE embedding IS NULL) LOOP PERFORM pg_sleep(0.05); END LOOP; END \$\$"
}
chunk_table() {
    sql -c "SELECT bge_vectorize_chunks('docs', 'body', 'doc_chunks', 'all-MiniLM-L6-v2')"
    wait_embedded
}
array_times=() table_times=()
for r in $(seq 1 "$ROUNDS"); do
    sql -c "SELECT bge_unvectorize('docs')" >/dev/null 2>&1 || true
    sql -c "DROP TABLE IF EXISTS doc_chunks"
    table_times+=("$(seconds chunk_table)")
    array_times+=("$(seconds sql -c "SELECT count(*) FROM bge_embed((SELECT array_agg(chunk ORDER BY id, seq) FROM doc_chunks), 'all-MiniLM-L6-v2')")")
done
TOKENS=$(sql -c "SELECT sum(tokens) FROM doc_chunks")
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) cores; $DOCS documents, $(sql -c "SELECT min(t) || '..' || max(t) FROM (SELECT sum(tokens) t FROM doc_chunks GROUP BY id) x") tokens each; $(sql -c "SELECT count(*) FROM doc_chunks") chunks, $TOKENS tokens"
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
A=$(median "${array_times[@]}") T=$(median "${table_times[@]}")
echo "array form:  ${array_times[*]} s -> median $(echo "$TOKENS / $A" | bc) tokens/s"
echo "chunk table: ${table_times[*]} s -> median $(echo "$TOKENS / $T" | bc) tokens/s"
echo "chunk table / array form: $(echo "scale=3; $A / $T" | bc)"
