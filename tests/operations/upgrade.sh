#!/usr/bin/env bash
# Upgrades in place, with only the new library installed:
#   1. CREATE EXTENSION pg_bge VERSION '0.1.0' (release 0.1.0's script, sql/pg_bge--0.1.0.sql)
#      works against this library; a generated-column table and a vectorized table are made
#      and filled under it (the vectorizer copes with the old catalog).
#   2. ALTER EXTENSION pg_bge UPDATE reaches the current version, and the catalog then equals a
#      fresh install's (functions with signatures, volatility, strictness, parallel safety,
#      costs and bodies; operators; tables, columns, constraints; policies; grants; comments:
#      tests/operations/catalog.sql).
#   3. The data still embeds: new and changed rows are vectorized, every vector equals
#      bge_embed(body, model) bitwise, and bge_unvectorize removes what 0.1.0's bge_vectorize made.
#
#   tests/operations/upgrade.sh MODEL_DIR     (as scripts/models/make_test_models.py makes it)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=${1:?usage: tests/operations/upgrade.sh MODEL_DIR}
export PG_BGE_PG=${PG_BGE_PG:-15} PG_BGE_CLUSTER=/tmp/pg_bge_cluster_upgrade PG_BGE_PORT=5562
. scripts/postgres/versions.sh
EXTDIR="$("$(pg_config_of "$PG_BGE_PG")" --sharedir)/extension"
for f in sql/pg_bge--*.sql; do
    [ -f "$EXTDIR/$(basename "$f")" ] || { echo "FAIL: $(basename "$f") is not installed in $EXTDIR (scripts/test.sh installs it)" >&2; exit 1; }
done
CURRENT=$(sed -n 's/^default_version = .\(.*\).$/\1/p' "$EXTDIR/pg_bge.control")
WORK=$(mktemp -d /tmp/pg_bge_upgrade.XXXXXX)
scripts/postgres/cluster.sh start "bge.model_dir = '$MODELS'" "shared_preload_libraries = 'pg_bge'"
trap 'scripts/postgres/cluster.sh stop; rm -rf "$WORK"' EXIT

sql() {
    local db=$1
    shift
    scripts/postgres/cluster.sh psql -d "$db" -qAtX -v ON_ERROR_STOP=1 "$@"
}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
# wait_filled DB: until the vectorizer has filled every row of vec (60 s at most).
wait_filled() {
    for _ in $(seq 1 120); do
        [ "$(sql "$1" -c "SELECT count(*) FROM vec WHERE emb IS NULL")" = 0 ] && return 0
        sleep 0.5
    done
    fail "vec still has unfilled rows in $1: $(sql "$1" -c "SELECT last_error FROM bge_vectorize_status()")"
}
M=all-MiniLM-L6-v2

echo "== 1. release 0.1.0's SQL against this library"
sql postgres -c "CREATE DATABASE upgraded" -c "CREATE DATABASE fresh"
sql upgraded -c "CREATE EXTENSION pg_bge VERSION '0.1.0'"
[ "$(sql upgraded -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_bge'")" = 0.1.0 ] || fail "not at 0.1.0"
sql upgraded <<SQL
CREATE TABLE gen (id int PRIMARY KEY, body text, emb real[] GENERATED ALWAYS AS (bge_embed(body, '$M')) STORED);
INSERT INTO gen SELECT g, 'generated row ' || g || repeat(' words', g % 9) FROM generate_series(1, 40) g;
CREATE TABLE vec (id serial PRIMARY KEY, body text, emb real[]);
INSERT INTO vec (body) SELECT 'vectorized row ' || g || repeat(' tokens', g % 11) FROM generate_series(1, 40) g;
SELECT bge_vectorize('vec', 'body', 'emb', '$M');
SQL
wait_filled upgraded

echo "== 2. ALTER EXTENSION pg_bge UPDATE reaches $CURRENT and equals a fresh install"
sql upgraded -c "ALTER EXTENSION pg_bge UPDATE"
[ "$(sql upgraded -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_bge'")" = "$CURRENT" ] || fail "not at $CURRENT after the update"
sql fresh -c "CREATE EXTENSION pg_bge"
sql upgraded -f tests/operations/catalog.sql >"$WORK/upgraded.txt"
sql fresh -f tests/operations/catalog.sql >"$WORK/fresh.txt"
[ "$(wc -l <"$WORK/fresh.txt")" -gt 50 ] || fail "the catalog description is too short to mean anything"
diff -u "$WORK/fresh.txt" "$WORK/upgraded.txt" || fail "the updated catalog differs from a fresh $CURRENT install (- fresh, + updated)"
echo "catalogs equal: $(wc -l <"$WORK/fresh.txt") facts"

echo "== 3. the data still embeds after the update"
[ "$(sql upgraded -c "SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'vec'::regclass AND tgname = 'bge_vectorize_emb'")" = A ] \
    || fail "the 0.1.0 registration's trigger does not fire in replication's apply worker after the update"
sql upgraded <<SQL
UPDATE vec SET body = body || ' changed' WHERE id % 4 = 0;
INSERT INTO vec (body) SELECT 'row added after the update ' || g FROM generate_series(1, 20) g;
UPDATE gen SET body = body || ' changed' WHERE id % 5 = 0;
SQL
wait_filled upgraded
bad=$(sql upgraded -c "SELECT (SELECT count(*) FROM vec WHERE emb IS DISTINCT FROM bge_embed(body, '$M')) + (SELECT count(*) FROM gen WHERE emb IS DISTINCT FROM bge_embed(body, '$M'))")
[ "$bad" = 0 ] || fail "$bad vectors differ from bge_embed(body, model) after the update"
[ "$(sql upgraded -c "SELECT bge_unvectorize('vec')")" = 1 ] || fail "bge_unvectorize did not remove the 0.1.0 registration"
[ "$(sql upgraded -c "SELECT count(*) FROM pg_indexes WHERE tablename = 'vec' AND indexname LIKE '%bge_pending'")" = 0 ] \
    || fail "bge_unvectorize left 0.1.0's pending index behind"
echo "upgrade: OK"
