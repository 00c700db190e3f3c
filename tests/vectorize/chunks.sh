#!/usr/bin/env bash
# A chunk table under four concurrent writers (pgbench: upserts, edits of one or two rows in a
# transaction, deletes) of long documents: at the end it equals bge_chunk(body, ...) of the
# final rows exactly, nothing is pending, and every chunk's embedding equals
# bge_embed(chunk, model) bitwise. Fails (exit 1) on the first violation.
#
#   tests/vectorize/chunks.sh MODEL_DIR     (MODEL_DIR as scripts/models/make_test_models.py makes it)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=${1:?usage: tests/vectorize/chunks.sh MODEL_DIR}
export PG_BGE_PG=${PG_BGE_PG:-15} PG_BGE_CLUSTER=/tmp/pg_bge_cluster_chunks PG_BGE_PORT=5568
. scripts/postgres/versions.sh
BIN=$(dirname "$(pg_config_of "$PG_BGE_PG")")
WORK=$(mktemp -d /tmp/pg_bge_chunks.XXXXXX)
chmod 755 "$WORK"
scripts/postgres/cluster.sh start "bge.model_dir = '$MODELS'" "shared_preload_libraries = 'pg_bge'"
trap 'scripts/postgres/cluster.sh stop; rm -rf "$WORK"' EXIT
sql() { scripts/postgres/cluster.sh psql -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
M=all-MiniLM-L6-v2

sql <<SQL >/dev/null
CREATE EXTENSION pg_bge;
CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
-- Paragraphs of sentences of varying length: documents of a few hundred to a few thousand tokens.
CREATE FUNCTION doc_text(seed int, paragraphs int) RETURNS text LANGUAGE sql AS \$\$
    SELECT string_agg('Paragraph ' || p || ' of document ' || seed || '. '
                      || repeat('Tables hold rows and the rows hold text about topic ' || ((seed * p) % 17) || '. ', 1 + (seed + p) % 6),
                      E'\n\n' ORDER BY p)
    FROM generate_series(1, paragraphs) p
\$\$;
INSERT INTO docs SELECT g, 'doc ' || g, doc_text(g, 3 + g % 12) FROM generate_series(1, 200) g;
SELECT bge_vectorize_chunks('docs', 'body', 'doc_chunks', '$M', 96, 12);
SQL
cat >"$WORK/upsert.sql" <<'EOF'
\set id random(1, 400)
\set n random(1, 14)
INSERT INTO docs VALUES (:id, 'doc', doc_text(:id * 7 + :n, :n)) ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body;
EOF
cat >"$WORK/edit.sql" <<'EOF'
\set id random(1, 400)
\set n random(1, 9)
BEGIN;
UPDATE docs SET body = body || ' An added sentence ' || :n || '.' WHERE id = :id;
UPDATE docs SET title = 'touched' WHERE id = :id + 1;
UPDATE docs SET body = left(body, length(body) / 2) WHERE id = :id + 1;
COMMIT;
EOF
cat >"$WORK/delete.sql" <<'EOF'
\set id random(1, 400)
DELETE FROM docs WHERE id = :id;
EOF
"$BIN/pgbench" -h /tmp -p 5568 -U postgres -n -c 4 -T 20 \
    -f "$WORK/upsert.sql@4" -f "$WORK/edit.sql@4" -f "$WORK/delete.sql@1" postgres >"$WORK/pgbench.log" 2>&1 ||
    fail "pgbench: $(tail -5 "$WORK/pgbench.log")"
grep -E "^number of (transactions actually processed|failed)" "$WORK/pgbench.log" || true
for i in $(seq 1 1200); do
    [ "$(sql -c "SELECT count(*) FROM doc_chunks WHERE embedding IS NULL")" = 0 ] && break
    [ "$i" -lt 1200 ] || fail "chunks still pending 120 s after the writers stopped: $(sql -c "SELECT * FROM bge_vectorize_status()")"
    sleep 0.1
done
mismatches=$(sql -c "SELECT count(*) FROM (
    (SELECT d.id, c.seq, c.chunk, c.start_char, c.end_char, c.tokens FROM docs d, bge_chunk(d.body, '$M', 96, 12) c
     EXCEPT SELECT id, seq, chunk, start_char, end_char, tokens FROM doc_chunks)
    UNION ALL
    (SELECT id, seq, chunk, start_char, end_char, tokens FROM doc_chunks
     EXCEPT SELECT d.id, c.seq, c.chunk, c.start_char, c.end_char, c.tokens FROM docs d, bge_chunk(d.body, '$M', 96, 12) c)) x")
[ "$mismatches" = 0 ] || fail "the chunk table differs from bge_chunk of the final rows in $mismatches rows"
wrong=$(sql -c "SELECT count(*) FROM doc_chunks WHERE embedding IS DISTINCT FROM bge_embed(chunk, '$M')")
[ "$wrong" = 0 ] || fail "$wrong chunk embeddings differ from bge_embed(chunk)"
[ "$(sql -c "SELECT pending FROM bge_vectorize_status() WHERE tbl = 'doc_chunks'::regclass")" = 0 ] || fail "bge_vectorize_status shows pending chunks"
echo "ok: $(sql -c "SELECT count(*) FROM docs") documents, $(sql -c "SELECT count(*) FROM doc_chunks") chunks, all equal to bge_chunk and embedded bitwise"
