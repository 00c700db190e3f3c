#!/usr/bin/env bash
# The model server under concurrency and faults, driven by psql clients in parallel:
#   1. 24 concurrent clients embed one text per call; every vector must equal, bitwise, the one
#      the same text gets in-process (bge.server = off), and the server must have batched
#      requests of different connections together.
#   2. statement_timeout and pg_cancel_backend stop a waiting backend promptly, and its slot
#      and the abandoned computation are given back.
#   3. A client terminated (FATAL) or disconnected mid-request leaks no slot.
#   4. SIGTERM of the worker under load: requests in flight fail with a clear ERROR within 1 s,
#      no result is ever wrong, the worker restarts, the next calls work.
#   5. The postmaster never restarts (pg_postmaster_start_time() unchanged throughout).
# Fails (exit 1) on the first violation.
#
#   tests/server/faults.sh MODEL_DIR     (MODEL_DIR as scripts/models/make_test_models.py makes it)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=${1:?usage: tests/server/faults.sh MODEL_DIR}
export PG_BGE_PG=${PG_BGE_PG:-15}
WORK=$(mktemp -d /tmp/pg_bge_faults.XXXXXX)
chmod 755 "$WORK"
scripts/postgres/cluster.sh start "bge.model_dir = '$MODELS'" "shared_preload_libraries = 'pg_bge'" "max_connections = 60"
trap 'scripts/postgres/cluster.sh stop; rm -rf "$WORK"' EXIT

sql() { scripts/postgres/cluster.sh psql -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# wait_idle SECONDS: until no request is queued or in flight (slots all given back).
wait_idle() {
    local deadline=$(($(now_ms) + $1 * 1000))
    while [ "$(sql -c "SELECT queue_depth + in_flight FROM bge_server_status()")" != 0 ]; do
        [ "$(now_ms)" -lt "$deadline" ] || fail "slots still in use after $1 s: $(sql -c "SELECT queue_depth, in_flight FROM bge_server_status()")"
        sleep 0.1
    done
}

sql -c "CREATE EXTENSION pg_bge"
STARTED=$(sql -c "SELECT pg_postmaster_start_time()")
check_postmaster() {
    [ "$(sql -c "SELECT pg_postmaster_start_time()")" = "$STARTED" ] || fail "the postmaster restarted ($1)"
}

# 480 passages of the benchmark corpus, with their in-process vectors as the reference.
python3 - "$WORK/texts.csv" <<'EOF'
import csv, sys
lines = [l.strip() for l in open("benches/corpus.txt", encoding="utf-8") if l.strip()][:480]
with open(sys.argv[1], "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    for i, l in enumerate(lines):
        w.writerow([i, l])
EOF
sql -c "CREATE TABLE texts (id int PRIMARY KEY, body text NOT NULL, ref real[])"
sql -c "\\copy texts (id, body) FROM '$WORK/texts.csv' WITH (FORMAT csv)"
sql -c "SET bge.server = off; UPDATE texts SET ref = bge_embed(body)"
[ "$(sql -c "SELECT count(*) FROM texts WHERE ref IS NOT NULL")" = 480 ] || fail "reference vectors missing"

echo "== 1. 24 concurrent clients, one text per call, compared bitwise with in-process"
before=$(sql -c "SELECT batches FROM bge_server_status()")
for k in $(seq 0 23); do
    # Half use bge.model, half name the model (the same fp32 copy).
    if [ $((k % 2)) = 0 ]; then call="bge_embed(body)"; else call="bge_embed(body, 'all-MiniLM-L6-v2')"; fi
    sql -c "SELECT count(*) FILTER (WHERE $call IS DISTINCT FROM ref) || ' of ' || count(*) FROM texts WHERE id % 24 = $k" >"$WORK/c$k" 2>&1 &
done
wait
for k in $(seq 0 23); do
    [ "$(cat "$WORK/c$k")" = "0 of 20" ] || fail "client $k: $(cat "$WORK/c$k") vectors differ from in-process"
done
read -r batches requests mean <<<"$(sql -F ' ' -c "SELECT batches - $before, requests, round(mean_batch_size::numeric, 2) FROM bge_server_status()")"
echo "   480 vectors equal; $batches forward passes; mean texts per pass since start $mean"
[ "$batches" -lt 480 ] || fail "no request of one connection shared a forward pass with another's ($batches passes for 480 texts)"
check_postmaster "concurrent clients"

BIG="SELECT count(*) FROM bge_embed(ARRAY(SELECT body FROM texts, generate_series(1, 10)))"

echo "== 2a. statement_timeout while waiting"
t0=$(now_ms)
out=$(sql -c "SET statement_timeout = '300ms'" -c "$BIG" 2>&1 || true)
elapsed=$(($(now_ms) - t0))
echo "   $out (${elapsed} ms including psql start)"
[[ $out == *"canceling statement due to statement timeout"* ]] || fail "statement_timeout did not cancel: $out"
[ "$elapsed" -lt 600 ] || fail "statement_timeout of 300 ms took $elapsed ms"
wait_idle 3
[ "$(sql -c "SELECT array_length(bge_embed('after the timeout'), 1)")" = 384 ] || fail "no embedding after a timeout"

echo "== 2b. pg_cancel_backend while waiting"
(
    sql -c "SET application_name = 'victim'" -c "$BIG" >"$WORK/victim.out" 2>&1 || true
    now_ms >"$WORK/victim.end"
) &
sleep 1
t0=$(now_ms)
sql -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'victim'" >/dev/null
wait
elapsed=$(($(cat "$WORK/victim.end") - t0))
echo "   $(cat "$WORK/victim.out") (${elapsed} ms after the cancel was sent, including psql start)"
grep -q "canceling statement due to user request" "$WORK/victim.out" || fail "cancel: $(cat "$WORK/victim.out")"
[ "$elapsed" -lt 400 ] || fail "cancel took $elapsed ms"
wait_idle 3

echo "== 3. a backend terminated and a client disconnected mid-request leak no slot"
(sql -c "SET application_name = 'victim2'" -c "$BIG" >/dev/null 2>&1 || true) &
sleep 1
sql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'victim2'" >/dev/null
wait
# The backend of a vanished client finishes its request (it notices only when it replies).
scripts/postgres/cluster.sh psql -d postgres -qAtX -c "SELECT count(*) FROM bge_embed(ARRAY(SELECT body FROM texts))" >/dev/null 2>&1 &
client=$!
sleep 0.5
kill -9 "$client" 2>/dev/null || true
wait 2>/dev/null || true
wait_idle 30
check_postmaster "terminated backend"

echo "== 4. SIGTERM of the worker under load"
old_pid=$(sql -c "SELECT pid FROM bge_server_status()")
for k in $(seq 0 15); do
    {
        for r in $(seq 0 29); do
            echo "SELECT bge_embed(body) IS NOT DISTINCT FROM ref FROM texts WHERE id = $(((k * 30 + r) % 480));"
        done
    } >"$WORK/load$k.sql"
    scripts/postgres/cluster.sh psql -d postgres -qAtX -f "$WORK/load$k.sql" >"$WORK/load$k.out" 2>&1 &
done
# One request (one slot's worth of texts) that takes seconds: in flight when the worker exits.
(
    sql -c "SELECT count(*) FROM bge_embed(ARRAY(SELECT body FROM texts WHERE id < 200))" >"$WORK/long.out" 2>&1 || true
    now_ms >"$WORK/long.end"
) &
sleep 1.5
t0=$(now_ms)
[ "$(sql -c "SELECT pg_terminate_backend(pid) FROM bge_server_status()")" = t ] || fail "pg_terminate_backend did not reach the worker"
wait
elapsed=$(($(cat "$WORK/long.end") - t0))
echo "   a long request in flight: $(cat "$WORK/long.out") (${elapsed} ms after SIGTERM)"
grep -q "model server exited while computing this request" "$WORK/long.out" || fail "in-flight request: $(cat "$WORK/long.out")"
[ "$elapsed" -lt 1000 ] || fail "the in-flight request took $elapsed ms to fail"
wrong=$(cat "$WORK"/load*.out | grep -c '^f$' || true)
right=$(cat "$WORK"/load*.out | grep -c '^t$' || true)
errors=$(cat "$WORK"/load*.out | grep -c 'ERROR' || true)
other=$(cat "$WORK"/load*.out | grep 'ERROR' | grep -vc 'model server exited' || true)
echo "   480 short requests under load: $right right, $wrong wrong, $errors failed with the server-exit ERROR"
[ "$wrong" = 0 ] || fail "$wrong wrong vectors across the worker restart"
[ "$other" = 0 ] || fail "unexpected errors: $(cat "$WORK"/load*.out | grep ERROR | grep -v 'model server exited' | head -3)"
[ $((right + errors)) = 480 ] || fail "$((480 - right - errors)) requests neither answered nor failed"
[ "$(sql -c "SELECT array_length(bge_embed('after the restart'), 1)")" = 384 ] || fail "no embedding after the worker restart"
new_pid=$(sql -c "SELECT pid FROM bge_server_status()")
[ "$new_pid" != "$old_pid" ] || fail "the worker did not restart"
echo "   worker $old_pid -> $new_pid"
[ "$(sql -c "SELECT count(*) FROM texts WHERE bge_embed(body) IS DISTINCT FROM ref")" = 0 ] || fail "vectors differ after the restart"
wait_idle 3
check_postmaster "worker SIGTERM"

echo "== model server faults: all passed"
