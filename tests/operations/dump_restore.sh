#!/usr/bin/env bash
# Backups: a database with vectorized tables (real[], pgvector's vector, a partitioned one),
# a generated embedding column and pgvector HNSW indexes on casts, dumped with pg_dump and
# restored into a fresh cluster three ways: pg_restore, pg_restore --single-transaction, and a
# plain-format dump through psql --single-transaction. After each restore: the registrations are
# there, every vector equals bge_embed(body, model), and new writes are vectorized with no
# manual step. Restored into a cluster without the model, the restore says which model is
# missing.
#
#   tests/operations/dump_restore.sh MODEL_DIR     (PostgreSQL 18 with pgvector by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=${1:?usage: tests/operations/dump_restore.sh MODEL_DIR}
export PG_BGE_PG=${PG_BGE_PG:-18}
. scripts/postgres/versions.sh
BIN=$(dirname "$(pg_config_of "$PG_BGE_PG")")
WORK=$(mktemp -d /tmp/pg_bge_dump.XXXXXX)
chmod 777 "$WORK"  # pg_dump runs as postgres
SRC=(PG_BGE_CLUSTER=/tmp/pg_bge_cluster_dump_src PG_BGE_PORT=5563)
DST=(PG_BGE_CLUSTER=/tmp/pg_bge_cluster_dump_dst PG_BGE_PORT=5564)
cluster() {
    local side=$1
    shift
    if [ "$side" = src ]; then env "${SRC[@]}" scripts/postgres/cluster.sh "$@"; else env "${DST[@]}" scripts/postgres/cluster.sh "$@"; fi
}
trap 'cluster src stop; cluster dst stop; rm -rf "$WORK"' EXIT
sql() {
    local side=$1 db=$2
    shift 2
    cluster "$side" psql -d "$db" -qAtX -v ON_ERROR_STOP=1 "$@"
}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
M=all-MiniLM-L6-v2
# wait_filled SIDE DB: until no vectorized table has pending rows (60 s at most).
wait_filled() {
    for _ in $(seq 1 120); do
        [ "$(sql "$1" "$2" -c "SELECT count(*) FROM bge_vectorize_status() WHERE pending > 0")" = 0 ] && return 0
        sleep 0.5
    done
    fail "rows still pending in $2: $(sql "$1" "$2" -c "SELECT tbl, pending, last_error FROM bge_vectorize_status()")"
}
# check SIDE DB WHAT: every vector right, then new writes vectorized.
check() {
    local side=$1 db=$2 what=$3 bad
    [ "$(sql "$side" "$db" -c "SELECT count(*) FROM bge_vectorized")" = 3 ] || fail "$what: the registrations were not restored"
    bad=$(sql "$side" "$db" -c "SELECT (SELECT count(*) FROM docs WHERE emb IS DISTINCT FROM bge_embed(body, '$M'))
                                     + (SELECT count(*) FROM notes WHERE emb IS DISTINCT FROM bge_embed(body, '$M')::vector(384))
                                     + (SELECT count(*) FROM parts WHERE emb IS DISTINCT FROM bge_embed(body, '$M'))
                                     + (SELECT count(*) FROM gen WHERE emb IS DISTINCT FROM bge_embed(body, '$M')::vector(384))")
    [ "$bad" = 0 ] || fail "$what: $bad restored vectors differ from bge_embed"
    sql "$side" "$db" <<SQL
INSERT INTO docs (body) SELECT 'written after the restore ' || g FROM generate_series(1, 15) g;
UPDATE docs SET body = body || ' (edited after the restore)' WHERE id % 6 = 0;
INSERT INTO notes (body) VALUES ('a note after the restore');
INSERT INTO parts SELECT g, 'part written after the restore ' || g FROM generate_series(150, 160) g;
INSERT INTO gen (body) VALUES ('generated after the restore');
SQL
    wait_filled "$side" "$db"
    bad=$(sql "$side" "$db" -c "SELECT (SELECT count(*) FROM docs WHERE emb IS DISTINCT FROM bge_embed(body, '$M'))
                                     + (SELECT count(*) FROM notes WHERE emb IS DISTINCT FROM bge_embed(body, '$M')::vector(384))
                                     + (SELECT count(*) FROM parts WHERE emb IS DISTINCT FROM bge_embed(body, '$M'))")
    [ "$bad" = 0 ] || fail "$what: $bad vectors wrong after new writes"
    [ "$(sql "$side" "$db" -c "SELECT id FROM docs ORDER BY emb::vector(384) <=> bge_embed_query('written after the restore 7', '$M')::vector(384) LIMIT 1")" != "" ] \
        || fail "$what: the HNSW search found nothing"
    [ "$(sql "$side" "$db" -c "SELECT bge_unvectorize('notes')")" = 1 ] || fail "$what: bge_unvectorize failed"
    echo "$what: registrations, vectors, new writes and search OK"
}

echo "== a database with vectorized tables, a generated column and HNSW indexes on casts"
cluster src start "bge.model_dir = '$MODELS'" "shared_preload_libraries = 'pg_bge'"
sql src postgres -c "CREATE DATABASE app"
sql src app <<SQL
CREATE EXTENSION pg_bge;
CREATE EXTENSION vector;
CREATE TABLE docs (id serial PRIMARY KEY, body text, emb real[]);
INSERT INTO docs (body) SELECT 'document ' || g || repeat(' about backups', g % 5) FROM generate_series(1, 60) g;
SELECT bge_vectorize('docs', 'body', 'emb', '$M');
CREATE INDEX docs_hnsw ON docs USING hnsw ((emb::vector(384)) vector_cosine_ops);
CREATE TABLE notes (id serial PRIMARY KEY, body text, emb vector(384));
INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 20) g;
SELECT bge_vectorize('notes', 'body', 'emb', '$M');
CREATE TABLE parts (id int PRIMARY KEY, body text, emb real[]) PARTITION BY RANGE (id);
CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (100);
CREATE TABLE parts_2 PARTITION OF parts FOR VALUES FROM (100) TO (200);
INSERT INTO parts SELECT g, 'part ' || g FROM generate_series(1, 140) g;
SELECT bge_vectorize('parts', 'body', 'emb', '$M');
CREATE TABLE gen (id serial PRIMARY KEY, body text,
                  emb vector(384) GENERATED ALWAYS AS (bge_embed(body, '$M')::vector(384)) STORED);
INSERT INTO gen (body) SELECT 'generated ' || g FROM generate_series(1, 30) g;
CREATE INDEX gen_hnsw ON gen USING hnsw (emb vector_cosine_ops);
SQL
wait_filled src app
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_pg "$BIN/pg_dump" -h /tmp -p 5563 -U postgres -Fc -f "$WORK/app.dump" app
as_pg "$BIN/pg_dump" -h /tmp -p 5563 -U postgres -Fp -f "$WORK/app.sql" app
cluster src stop

cluster dst start "bge.model_dir = '$MODELS'" "shared_preload_libraries = 'pg_bge'"
echo "== pg_restore"
sql dst postgres -c "CREATE DATABASE r1" -c "CREATE DATABASE r2" -c "CREATE DATABASE r3"
as_pg "$BIN/pg_restore" -h /tmp -p 5564 -U postgres -d r1 --exit-on-error "$WORK/app.dump" || fail "pg_restore failed"
check dst r1 "pg_restore"
echo "== pg_restore --single-transaction"
as_pg "$BIN/pg_restore" -h /tmp -p 5564 -U postgres -d r2 --single-transaction "$WORK/app.dump" || fail "pg_restore --single-transaction failed"
check dst r2 "pg_restore --single-transaction"
echo "== plain dump through psql --single-transaction"
sql dst r3 --single-transaction -f "$WORK/app.sql" >/dev/null || fail "the plain dump did not restore"
check dst r3 "plain dump"

echo "== restored where the model is missing"
mkdir -p "$WORK/no-models"
cluster dst start "bge.model_dir = '$WORK/no-models'"
sql dst postgres -c "CREATE DATABASE r4"
if as_pg "$BIN/pg_restore" -h /tmp -p 5564 -U postgres -d r4 --exit-on-error "$WORK/app.dump" 2>"$WORK/r4.err"; then
    fail "a restore without the model succeeded"
fi
grep -q "model \"$M\" is not installed" "$WORK/r4.err" || { cat "$WORK/r4.err" >&2; fail "the failed restore does not name the missing model"; }
echo "without the model: $(grep -m1 'ERROR' "$WORK/r4.err")"
echo "dump/restore: OK"
