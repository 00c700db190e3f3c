#!/usr/bin/env bash
# Replicas:
#   1. A streaming standby (pg_basebackup) embeds exactly as its primary does, reports the
#      vectorized tables, and every pg_bge function that writes refuses up front with SQLSTATE
#      25006 and no backtrace, even when it would have nothing to do. Promoted, it vectorizes
#      new writes within seconds.
#   2. A logical-replication subscriber that vectorizes its own copy of a table (the publication
#      carries the text, not the vectors) keeps every vector equal to bge_embed(body, model)
#      under replicated inserts, updates and deletes: pg_bge's trigger fires in the apply worker.
#
#   tests/operations/replication.sh MODEL_DIR     (as scripts/models/make_test_models.py makes it)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=${1:?usage: tests/operations/replication.sh MODEL_DIR}
export PG_BGE_PG=${PG_BGE_PG:-15}
. scripts/postgres/versions.sh
BIN=$(dirname "$(pg_config_of "$PG_BGE_PG")")
PRIMARY=(PG_BGE_CLUSTER=/tmp/pg_bge_cluster_primary PG_BGE_PORT=5565)
SUBSCRIBER=(PG_BGE_CLUSTER=/tmp/pg_bge_cluster_subscriber PG_BGE_PORT=5567)
STANDBY=/tmp/pg_bge_cluster_standby
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
stop_standby() { as_pg "$BIN/pg_ctl" -D "$STANDBY" -m immediate stop >/dev/null 2>&1 || true; }
trap 'stop_standby; env "${PRIMARY[@]}" scripts/postgres/cluster.sh stop; env "${SUBSCRIBER[@]}" scripts/postgres/cluster.sh stop' EXIT
psql_at() {
    local port=$1
    shift
    "$BIN/psql" -h /tmp -p "$port" -U postgres -d app -qAtX -v ON_ERROR_STOP=1 "$@"
}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
M=all-MiniLM-L6-v2
# wait_filled PORT TABLE: until TABLE has no unfilled row (60 s at most).
wait_filled() {
    for _ in $(seq 1 120); do
        [ "$(psql_at "$1" -c "SELECT count(*) FROM $2 WHERE body IS NOT NULL AND emb IS NULL")" = 0 ] && return 0
        sleep 0.5
    done
    fail "$2 on port $1 still has unfilled rows: $(psql_at "$1" -c "SELECT tbl, pending, last_error FROM bge_vectorize_status()")"
}
wrong() { psql_at "$1" -c "SELECT count(*) FROM $2 WHERE body IS NOT NULL AND emb IS DISTINCT FROM bge_embed(body, '$M')"; }

echo "== primary"
env "${PRIMARY[@]}" scripts/postgres/cluster.sh start "bge.model_dir = '$MODELS'" "shared_preload_libraries = 'pg_bge'" "wal_level = logical"
"$BIN/psql" -h /tmp -p 5565 -U postgres -d postgres -qAtX -c "CREATE DATABASE app"
psql_at 5565 <<SQL >/dev/null
CREATE EXTENSION pg_bge;
CREATE TABLE docs (id int PRIMARY KEY, body text, emb real[]);
INSERT INTO docs SELECT g, 'replicated document ' || g || repeat(' text', g % 6) FROM generate_series(1, 50) g;
SELECT bge_vectorize('docs', 'body', 'emb', '$M');
CREATE PUBLICATION texts FOR TABLE docs (id, body);
SQL
wait_filled 5565 docs

echo "== 1. a streaming standby"
stop_standby
rm -rf "$STANDBY"
as_pg "$BIN/pg_basebackup" -h /tmp -p 5565 -U postgres -D "$STANDBY" -R -X stream >/dev/null
echo "port = 5566" | as_pg tee -a "$STANDBY/postgresql.conf" >/dev/null
as_pg env -u RUST_BACKTRACE "$BIN/pg_ctl" -D "$STANDBY" -l "$STANDBY/server.log" -w start >/dev/null
[ "$(psql_at 5566 -c "SELECT pg_is_in_recovery()")" = t ] || fail "the standby is not in recovery"
[ "$(psql_at 5566 -c "SELECT bge_embed('the same on every node', '$M')::text")" = "$(psql_at 5565 -c "SELECT bge_embed('the same on every node', '$M')::text")" ] \
    || fail "the standby embeds differently from its primary"
[ "$(wrong 5566 docs)" = 0 ] || fail "the standby's replicated vectors differ from its own bge_embed"
[ "$(psql_at 5566 -c "SELECT count(*) FROM bge_vectorize_status() WHERE tbl = 'docs'::regclass AND pending = 0")" = 1 ] \
    || fail "bge_vectorize_status does not work on the standby"
psql_at 5566 -c "CREATE FUNCTION pg_temp.x() RETURNS void LANGUAGE sql AS ''" 2>/dev/null && fail "the standby accepted a write"
for statement in "CALL bge_backfill('docs', 'body', 'emb')" \
                 "SELECT bge_vectorize('docs', 'body', 'emb')" \
                 "SELECT bge_unvectorize('docs')" \
                 "SELECT bge_unvectorize('pg_class')"; do
    out=$(RUST_BACKTRACE=full psql_at 5566 -v VERBOSITY=verbose -c "$statement" 2>&1) && fail "the standby ran: $statement"
    echo "$out" | grep -q "ERROR:  25006: .* cannot run on a standby" || fail "$statement on the standby: $out"
    echo "$out" | grep -v "^LOCATION:" | grep -qiE "backtrace|panicked|\.rs:[0-9]" && fail "$statement on the standby shows Rust internals: $out"
done
echo "standby: embeds, reports, and refuses writing functions with 25006"
as_pg "$BIN/pg_ctl" -D "$STANDBY" -w promote >/dev/null
psql_at 5566 -c "INSERT INTO docs SELECT g, 'written on the promoted standby ' || g FROM generate_series(1001, 1020) g"
wait_filled 5566 docs
[ "$(wrong 5566 docs)" = 0 ] || fail "the promoted standby's vectors are wrong"
echo "promoted: the vectorizer resumed"
stop_standby

echo "== 2. a logical-replication subscriber vectorizing its own copy"
env "${SUBSCRIBER[@]}" scripts/postgres/cluster.sh start "bge.model_dir = '$MODELS'" "shared_preload_libraries = 'pg_bge'"
"$BIN/psql" -h /tmp -p 5567 -U postgres -d postgres -qAtX -c "CREATE DATABASE app"
psql_at 5567 <<SQL >/dev/null
CREATE EXTENSION pg_bge;
CREATE TABLE docs (id int PRIMARY KEY, body text, emb real[]);
SELECT bge_vectorize('docs', 'body', 'emb', '$M');
CREATE SUBSCRIPTION texts CONNECTION 'host=/tmp port=5565 user=postgres dbname=app' PUBLICATION texts;
SQL
for round in 1 2 3 4; do
    psql_at 5565 <<SQL
INSERT INTO docs SELECT g, 'round $round document ' || g FROM generate_series($round * 100, $round * 100 + 30) g;
UPDATE docs SET body = body || ' (changed in round $round)' WHERE id % 5 = $round % 5;
DELETE FROM docs WHERE id % 11 = $round;
SQL
done
# Caught up: the subscriber has the publisher's texts exactly.
want=$(psql_at 5565 -c "SELECT md5(string_agg(id || ':' || coalesce(body, ''), ',' ORDER BY id)) FROM docs")
for _ in $(seq 1 120); do
    [ "$(psql_at 5567 -c "SELECT md5(string_agg(id || ':' || coalesce(body, ''), ',' ORDER BY id)) FROM docs")" = "$want" ] && break
    sleep 0.5
done
[ "$(psql_at 5567 -c "SELECT md5(string_agg(id || ':' || coalesce(body, ''), ',' ORDER BY id)) FROM docs")" = "$want" ] \
    || fail "the subscriber did not catch up with the publisher"
wait_filled 5567 docs
[ "$(wrong 5567 docs)" = 0 ] || fail "$(wrong 5567 docs) of the subscriber's vectors are stale"
[ "$(psql_at 5567 -c "SELECT pending FROM bge_vectorize_status() WHERE tbl = 'docs'::regclass")" = 0 ] || fail "the subscriber reports pending rows"
echo "subscriber: $(psql_at 5567 -c "SELECT count(*) FROM docs") rows, every vector equal to bge_embed(body)"
psql_at 5567 -c "DROP SUBSCRIPTION texts" >/dev/null
echo "replication: OK"
