#!/usr/bin/env bash
# bge_backfill and bge_vectorize under concurrent writers, cancel and a server restart:
#   1. bge_backfill of 5,000 rows while a writer inserts rows, updates other columns (moving
#      rows) and rewrites sources (setting their target NULL); cancelled in the middle, which
#      keeps the batches committed so far; called again to resume. Progress NOTICEs arrive while
#      it runs. At the end every row's vector equals bge_embed(body), bitwise.
#   2. bge_vectorize under a stream of inserts, updates and deletes from 4 clients (pgbench),
#      with a server restart in the middle while rows are pending: the launcher brings the
#      worker back, nothing stays pending, and every row's vector equals bge_embed(body).
# Fails (exit 1) on the first violation.
#
#   tests/vectorize/stream.sh MODEL_DIR     (MODEL_DIR as scripts/models/make_test_models.py makes it)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=${1:?usage: tests/vectorize/stream.sh MODEL_DIR}
export PG_BGE_PG=${PG_BGE_PG:-15}
. scripts/postgres/versions.sh
BIN=$(dirname "$(pg_config_of "$PG_BGE_PG")")
WORK=$(mktemp -d /tmp/pg_bge_stream.XXXXXX)
chmod 755 "$WORK"
scripts/postgres/cluster.sh start "bge.model_dir = '$MODELS'" "shared_preload_libraries = 'pg_bge'"
DATA=$(scripts/postgres/cluster.sh psql -d postgres -qAtX -c "SHOW data_directory")
trap 'jobs -p | xargs -r kill 2>/dev/null; scripts/postgres/cluster.sh stop; rm -rf "$WORK"' EXIT

sql() { scripts/postgres/cluster.sh psql -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
# wrong_rows TABLE: rows whose vector is missing or differs from bge_embed(body).
wrong_rows() { sql -c "SELECT count(*) FROM $1 WHERE body IS NOT NULL AND emb IS DISTINCT FROM bge_embed(body)"; }

sql -c "CREATE EXTENSION pg_bge"

echo "== 1. bge_backfill of 5,000 rows with a concurrent writer, cancelled and resumed"
sql -c "CREATE TABLE bf (id serial PRIMARY KEY, body text NOT NULL, hits int NOT NULL DEFAULT 0, emb real[])"
sql -c "INSERT INTO bf (body) SELECT 'document ' || g || repeat(' about tables and vectors', g % 7) FROM generate_series(1, 5000) g"
writer() {
    for i in $(seq 1 150); do
        sql -c "UPDATE bf SET hits = hits + 1 WHERE id = (random() * 4999)::int + 1" \
            -c "UPDATE bf SET body = body || ' rewritten', emb = NULL WHERE id = (random() * 4999)::int + 1" \
            -c "INSERT INTO bf (body) VALUES ('written during the backfill $i')" || echo "writer failed" >>"$WORK/writer.err"
        sleep 0.1
    done
}
writer &
WRITER=$!
sql -c "CALL bge_backfill('bf', 'body', 'emb', batch_tokens => 2048, progress => '1 second')" >"$WORK/first.log" 2>&1 &
FIRST=$!
sleep 6
sql -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'CALL bge_backfill%'" >/dev/null
wait $FIRST && fail "the backfill was not cancelled"
grep -q "canceling statement" "$WORK/first.log" || fail "no cancel error: $(cat "$WORK/first.log")"
grep -q "NOTICE:  bge_backfill: [0-9]* of [0-9]* rows, [0-9]* rows/s, [0-9]* tokens/s, about [0-9]* s left" "$WORK/first.log" ||
    fail "no progress NOTICE: $(cat "$WORK/first.log")"
kept=$(sql -c "SELECT count(emb) FROM bf")
[ "$kept" -gt 0 ] && [ "$kept" -lt 5000 ] || fail "after the cancel $kept rows are filled (expected some, not all)"
echo "cancelled with $kept rows filled and committed"
sql -c "CALL bge_backfill('bf', 'body', 'emb', batch_tokens => 2048, progress => '2 seconds')" >"$WORK/second.log" 2>&1 ||
    fail "the resumed backfill failed: $(cat "$WORK/second.log")"
wait $WRITER
[ ! -s "$WORK/writer.err" ] || fail "the writer failed while the backfill ran: $(cat "$WORK/writer.err")"
grep "filled" "$WORK/second.log"
# Rows the writer changed after the resumed backfill passed them: one more call picks them up.
sql -c "CALL bge_backfill('bf', 'body', 'emb')" >"$WORK/third.log" 2>&1 || fail "third backfill: $(cat "$WORK/third.log")"
[ "$(sql -c "SELECT count(*) FROM bf")" -ge 5150 ] || fail "the writer's rows are missing"
[ "$(sql -c "SELECT count(*) FROM bf WHERE emb IS NULL")" = 0 ] || fail "rows left NULL"
[ "$(wrong_rows bf)" = 0 ] || fail "$(wrong_rows bf) rows differ from bge_embed(body)"
echo "ok: $(sql -c "SELECT count(*) FROM bf") rows, every vector equal to bge_embed(body)"

echo "== 2. bge_vectorize under inserts, updates and deletes, with a restart in the middle"
sql -c "CREATE TABLE vz (id int PRIMARY KEY, body text, note text, emb real[])"
sql -c "INSERT INTO vz (id, body) SELECT g, 'existing ' || g FROM generate_series(1, 500) g"
sql -c "SELECT bge_vectorize('vz', 'body', 'emb')"
cat >"$WORK/upsert.sql" <<'EOF'
\set id random(1, 2000)
\set n random(1, 30)
INSERT INTO vz (id, body) VALUES (:id, 'passage ' || :id || repeat(' word', :n)) ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body || ' again';
EOF
cat >"$WORK/update.sql" <<'EOF'
\set id random(1, 2000)
\set n random(1, 9)
BEGIN;
UPDATE vz SET body = body || ' u' || :n WHERE id = :id;
UPDATE vz SET note = 'touched' WHERE id = :id + 1;
UPDATE vz SET body = body || ' twice' WHERE id = :id;
COMMIT;
EOF
cat >"$WORK/delete.sql" <<'EOF'
\set id random(1, 2000)
DELETE FROM vz WHERE id = :id;
EOF
stream() {
    "$BIN/pgbench" -h /tmp -p "$(scripts/postgres/cluster.sh port)" -U postgres -n -c 4 -R 150 -T "$1" \
        -f "$WORK/upsert.sql@5" -f "$WORK/update.sql@4" -f "$WORK/delete.sql@1" postgres >"$WORK/pgbench.log" 2>&1 ||
        fail "pgbench: $(tail -5 "$WORK/pgbench.log")"
    grep -E "^number of (transactions actually processed|failed)" "$WORK/pgbench.log" || true
}
stream 12
pending=$(sql -c "SELECT count(*) FROM vz WHERE emb IS NULL AND body IS NOT NULL")
echo "restarting the server with $pending rows pending"
[ "$pending" -gt 0 ] || echo "(nothing pending at the restart: the worker kept up)"
runuser -u postgres -- "$BIN/pg_ctl" -D "$DATA" -m fast -w restart -l "$DATA/server.log" >/dev/null 2>&1 ||
    "$BIN/pg_ctl" -D "$DATA" -m fast -w restart -l "$DATA/server.log" >/dev/null
# The launcher starts the worker again, without anyone calling into pg_bge.
for i in $(seq 1 100); do
    [ "$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_bge vectorizer'")" = 1 ] && break
    [ "$i" -lt 100 ] || fail "no vectorizer worker 10 s after the restart"
    sleep 0.1
done
stream 12
for i in $(seq 1 1200); do
    [ "$(sql -c "SELECT count(*) FROM vz WHERE emb IS NULL AND body IS NOT NULL")" = 0 ] && break
    [ "$i" -lt 1200 ] || fail "rows still pending 120 s after the writers stopped: $(sql -c "SELECT * FROM bge_vectorize_status()")"
    sleep 0.1
done
sql -c "SELECT pending, failed, rows_done, round(rows_per_s) AS rows_per_s, last_error FROM bge_vectorize_status()"
[ "$(sql -c "SELECT pending FROM bge_vectorize_status()")" = 0 ] || fail "bge_vectorize_status shows pending rows"
[ "$(wrong_rows vz)" = 0 ] || fail "$(wrong_rows vz) rows differ from bge_embed(body)"
echo "ok: $(sql -c "SELECT count(*) FROM vz") rows, every vector equal to bge_embed(body)"
