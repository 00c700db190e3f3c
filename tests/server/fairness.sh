#!/usr/bin/env bash
# The model server is shared fairly between roles and keeps its model copies under
# bge.server_memory (a cluster of its own, so it runs beside the other tests' clusters):
#   1. Role A alone floods (24 connections embedding 300-text arrays, more connections than
#      bge.server_slots): the server stays busy for it (work-conserving: its token rate is
#      near the unloaded one), and bge_server_status() counts the requests that wait as
#      queued (queue_depth > 1), not in flight.
#   2. During that flood, role B's single short bge_embed returns within 2 s, every time
#      (it took tens of seconds while the server was first-in first-out across roles).
#   3. A session switching bge.precision (fp32, bf16 where the CPU has it, int8) with a
#      bge.server_memory that fits about one copy: the copies listed stay within the budget,
#      the least recently used one is dropped, and results stay right.
# Fails (exit 1) on the first violation.
#
#   tests/server/fairness.sh MODEL_DIR     (MODEL_DIR as scripts/models/make_test_models.py makes it)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=${1:?usage: tests/server/fairness.sh MODEL_DIR}
export PG_BGE_PG=${PG_BGE_PG:-15}
export PG_BGE_CLUSTER=${PG_BGE_FAIR_CLUSTER:-/tmp/pg_bge_cluster_fair} PG_BGE_PORT=${PG_BGE_FAIR_PORT:-5531}
WORK=$(mktemp -d /tmp/pg_bge_fairness.XXXXXX)
chmod 755 "$WORK"
scripts/postgres/cluster.sh start "bge.model_dir = '$MODELS'" "shared_preload_libraries = 'pg_bge'" "max_connections = 60" \
    "bge.server_slots = 16"
FLOOD_PIDS=()
cleanup() {
    for p in "${FLOOD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    scripts/postgres/cluster.sh stop
    rm -rf "$WORK"
}
trap cleanup EXIT

sql() { scripts/postgres/cluster.sh psql -d postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
wait_idle() {
    local deadline=$(($(now_ms) + $1 * 1000))
    while [ "$(sql -c "SELECT queue_depth + in_flight FROM bge_server_status()")" != 0 ]; do
        [ "$(now_ms)" -lt "$deadline" ] || fail "slots still in use after $1 s: $(sql -c "SELECT queue_depth, in_flight FROM bge_server_status()")"
        sleep 0.1
    done
}

sql -c "CREATE EXTENSION pg_bge"
# Two ordinary roles.
sql -c "CREATE ROLE bge_flood LOGIN; CREATE ROLE bge_victim LOGIN"
as_role() {
    local role=$1
    shift
    scripts/postgres/cluster.sh psql -d postgres -U "$role" -qAtX -v ON_ERROR_STOP=1 "$@"
}
TEXT="some passage text of moderate length about databases, embeddings and sharing a server fairly"
FLOOD="SELECT count(*) FROM bge_embed(array_fill('$TEXT'::text, ARRAY[300]), 'all-MiniLM-L6-v2');"
# The model loaded, and one flood request unloaded: its time and the server's token rate alone.
[ "$(as_role bge_victim -c "SELECT array_length(bge_embed('x', 'all-MiniLM-L6-v2'), 1)")" = 384 ] || fail "no embedding"
read -r tokens0 <<<"$(sql -c "SELECT tokens FROM bge_server_status()")"
t0=$(now_ms)
[ "$(as_role bge_flood -c "$FLOOD")" = 300 ] || fail "the flood's request failed"
alone_ms=$(($(now_ms) - t0))
read -r tokens1 <<<"$(sql -c "SELECT tokens FROM bge_server_status()")"
request_tokens=$((tokens1 - tokens0))
alone_rate=$((request_tokens * 1000 / (alone_ms > 0 ? alone_ms : 1)))
echo "   one 300-text request alone: ${alone_ms} ms, $request_tokens tokens ($alone_rate tokens/s)"

echo "== 1. role A alone: 24 connections flooding, more than bge.server_slots (16)"
for r in $(seq 1 400); do echo "$FLOOD"; done >"$WORK/flood.sql"
for k in $(seq 1 24); do
    as_role bge_flood -f "$WORK/flood.sql" >/dev/null 2>"$WORK/flood$k.err" &
    FLOOD_PIDS+=($!)
done
sleep 3
read -r tokens_a batches_a t_a <<<"$(sql -F ' ' -c "SELECT tokens, batches, $(now_ms) FROM bge_server_status()")"
max_queue=0
for i in $(seq 1 12); do
    q=$(sql -c "SELECT queue_depth FROM bge_server_status()")
    [ "$q" -gt "$max_queue" ] && max_queue=$q
    sleep 0.25
done
read -r tokens_b batches_b t_b <<<"$(sql -F ' ' -c "SELECT tokens, batches, $(now_ms) FROM bge_server_status()")"
flood_rate=$(((tokens_b - tokens_a) * 1000 / (t_b - t_a)))
batch_ms=$(((t_b - t_a) / (batches_b - batches_a > 0 ? batches_b - batches_a : 1)))
echo "   the server computed $flood_rate tokens/s for role A alone ($alone_rate alone on one connection), ${batch_ms} ms a batch; queue_depth up to $max_queue"
[ $((flood_rate * 2)) -ge "$alone_rate" ] || fail "role A alone is not served at the server's rate ($flood_rate < half of $alone_rate tokens/s)"
[ "$max_queue" -gt 1 ] || fail "queue_depth never above 1 with 24 connections flooding"

echo "== 2. role B's single short request during role A's flood"
worst=0
for i in $(seq 1 6); do
    # A new connection each time (its first call also loads the tokenizer); the statement's
    # own time, as psql's \timing measures it.
    t0=$(now_ms)
    out=$(as_role bge_victim -c "\\timing on" -c "SELECT array_length(bge_embed('x', 'all-MiniLM-L6-v2'), 1)" 2>&1) || fail "role B's request failed: $out"
    wall=$(($(now_ms) - t0))
    [ "$(head -1 <<<"$out")" = 384 ] || fail "role B got $out"
    elapsed=$(sed -n 's/^Time: \([0-9]*\).*/\1/p' <<<"$out")
    echo "   role B: ${elapsed} ms (${wall} ms with the connection)"
    [ "$elapsed" -gt "$worst" ] && worst=$elapsed
    sleep 0.3
done
[ "$worst" -lt 2000 ] || fail "role B waited $worst ms behind role A's flood"
# Role B's long array shares batches with the flood's requests and with role B's own short ones
# (three more connections), so it is computed in pieces over several passes of a batch and over
# several batches: every vector must still be its own text's, bitwise the in-process one.
sql -c "CREATE TABLE fair_ref AS SELECT g, 'distinct passage ' || g || repeat(' words', g % 40) AS body FROM generate_series(1, 300) g" \
    -c "SET bge.server = off" -c "ALTER TABLE fair_ref ADD COLUMN ref real[]" -c "UPDATE fair_ref SET ref = bge_embed(body, 'all-MiniLM-L6-v2')" \
    -c "GRANT SELECT ON fair_ref TO bge_victim"
for r in $(seq 1 200); do echo "SELECT bge_embed('short request $r', 'all-MiniLM-L6-v2') IS NOT NULL;"; done >"$WORK/short.sql"
SHORT_PIDS=()
for k in 1 2 3; do
    as_role bge_victim -f "$WORK/short.sql" >/dev/null 2>&1 &
    SHORT_PIDS+=($!)
done
for i in 1 2 3; do
    wrong=$(as_role bge_victim -c "SELECT count(*) FROM (SELECT e, row_number() OVER () AS n FROM bge_embed(ARRAY(SELECT body FROM fair_ref ORDER BY g), 'all-MiniLM-L6-v2') e) r
                                   JOIN fair_ref f ON f.g = r.n WHERE r.e IS DISTINCT FROM f.ref")
    [ "$wrong" = 0 ] || fail "role B's array during the flood: $wrong of 300 vectors are not their text's"
done
for p in "${SHORT_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
echo "   role B's 300-text array during the flood and its own short requests: every vector its own text's, bitwise (3 times)"
read -r q f <<<"$(sql -F ' ' -c "SELECT queue_depth, in_flight FROM bge_server_status()")"
echo "   still flooding: queue_depth $q, in_flight $f"
sql -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'bge_flood'" >/dev/null
for p in "${FLOOD_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
FLOOD_PIDS=()
wait_idle 10
! grep -h ERROR "$WORK"/flood*.err | grep -v "terminating connection" | grep -q . || fail "flood errors: $(grep -h ERROR "$WORK"/flood*.err | head -3)"

echo "== 3. bge.server_memory: one session switching bge.precision"
fp32_bytes=$(sql -c "SELECT (m->>'resident_bytes')::bigint FROM bge_server_status(), jsonb_array_elements(models) m WHERE m->>'name' = 'all-MiniLM-L6-v2' AND m->>'precision' = 'fp32'")
[ -n "$fp32_bytes" ] || fail "no fp32 copy listed"
budget_mb=$(((fp32_bytes * 11 / 10 + 1048575) / 1048576))
sql -c "ALTER SYSTEM SET bge.server_memory = '${budget_mb}MB'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
precisions=(fp32 int8)
grep -qw avx512_bf16 /proc/cpuinfo && precisions=(fp32 bf16 int8)
copies() {
    sql -c "SELECT coalesce(string_agg(m->>'precision', ',' ORDER BY m->>'precision'), '') || ' ' || coalesce(sum((m->>'resident_bytes')::bigint), 0)
            FROM bge_server_status(), jsonb_array_elements(models) m"
}
used=0
dropped=0
for round in 1 2; do
    for p in "${precisions[@]}"; do
        [ "$round" = 2 ] || used=$((used + 1))
        # Each precision's vector against the same session's earlier one (its copy may have
        # been dropped and loaded again meanwhile: the result must not change).
        v=$(sql -c "SET bge.precision = '$p'" -c "SELECT md5(bge_embed('$TEXT')::text)")
        if [ "$round" = 1 ]; then eval "ref_$p=$v"; else [ "$v" = "$(eval echo "\$ref_$p")" ] || fail "$p vector changed after its copy was reloaded"; fi
        read -r listed total <<<"$(copies)"
        echo "   after $p: copies [$listed], $((total / 1048576)) MB of ${budget_mb} MB"
        [[ ",$listed," == *",$p,"* ]] || fail "the $p copy in use is not listed"
        [ "$total" -le $((budget_mb * 1048576)) ] || fail "copies take $total bytes, over bge.server_memory = ${budget_mb}MB"
        [ "$(tr ',' '\n' <<<"$listed" | wc -l)" -ge "$used" ] || dropped=1
    done
done
[ "$dropped" = 1 ] || fail "no copy was ever dropped under a budget of about one copy"
wait_idle 3

echo "== model server fairness: all passed"
