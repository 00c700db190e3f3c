#!/usr/bin/env bash
# bge-serve end to end: builds target/release/bge-serve, runs its Rust tests (in process and over
# sockets, on the tiny committed models), then starts the binary over MODEL_DIR on a free port and
# runs tests/http/check.py against it: the official `openai` Python client (base_url changed
# only), the Cloudflare and Baidu shapes, junk and disconnects, memory over 4,000 requests,
# vectors against the committed sentence-transformers goldens, and bitwise against SQL's
# bge_embed(text, model) in a scratch PostgreSQL cluster of its own (skipped, loudly, when
# pg_bge is not installed), or in the database PSQL_COMMAND reaches. Finally SIGTERM: the
# server must exit 0. Then a second server over MODEL_DIR/rerankers: POST /rerank in TEI's shape
# (check.py --rerank), against transformers' goldens and bitwise against SQL's bge_rerank in the
# scratch cluster. Fails (exit 1) on the first violation.
#
#   tests/http/run.sh MODEL_DIR [PSQL_COMMAND]
#
# MODEL_DIR as scripts/models/make_test_models.py makes it (all-MiniLM-L6-v2 and rerankers/ in it);
# PSQL_COMMAND e.g. "psql -h /tmp -p 5432 -U postgres -d mydb", a database whose bge.model_dir
# holds the same all-MiniLM-L6-v2.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=$(cd "${1:?usage: tests/http/run.sh MODEL_DIR [PSQL_COMMAND]}" && pwd)
PSQL_COMMAND=${2:-}
export PG_BGE_PG=${PG_BGE_PG:-15} PG_BGE_CLUSTER=/tmp/pg_bge_cluster_http PG_BGE_PORT=5569
. scripts/postgres/versions.sh
[ -f "$MODELS/all-MiniLM-L6-v2/config.json" ] || { echo "tests/http/run.sh: no all-MiniLM-L6-v2 in $MODELS" >&2; exit 2; }
[ -f "$MODELS/rerankers/tiny-reranker-xlmr/config.json" ] ||
    { echo "tests/http/run.sh: no rerankers/ in $MODELS (rerun scripts/models/make_test_models.py)" >&2; exit 2; }

# The official OpenAI client (and numpy, which it uses to decode base64 when present).
python3 -c 'import openai, numpy' 2>/dev/null || python3 -m pip install --quiet 'openai>=1.40' numpy

echo "== bge-serve: build and Rust tests (cargo test --release -p bge-serve)"
cargo build --release -p bge-serve
cargo test --release -p bge-serve

WORK=$(mktemp -d /tmp/pg_bge_http.XXXXXX)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    [ -n "${STARTED_CLUSTER:-}" ] && scripts/postgres/cluster.sh stop
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "$PSQL_COMMAND" ]; then
    if [ -f "$("$(pg_config_of "$PG_BGE_PG")" --pkglibdir)/pg_bge.so" ]; then
        chmod a+rX "$MODELS"
        scripts/postgres/cluster.sh start "bge.model_dir = '$MODELS'"
        STARTED_CLUSTER=1
        PSQL_COMMAND="$(dirname "$(pg_config_of "$PG_BGE_PG")")/psql -h /tmp -p $PG_BGE_PORT -U postgres -d postgres"
    else
        echo "== SKIPPED: pg_bge is not installed in PostgreSQL $PG_BGE_PG, so no bitwise comparison with SQL"
    fi
fi

echo "== bge-serve over $MODELS"
KEY=test-key-$RANDOM
# start_server DIR: bge-serve over DIR on a free port (PORT, SERVER_PID), once it listens.
start_server() {
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    target/release/bge-serve --models "$1" --listen "127.0.0.1:$PORT" --api-key "$KEY" --device cpu \
        --request-timeout 3 >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
        grep -q "listening on" "$WORK/server.log" && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; echo "FAIL: bge-serve exited at start" >&2; exit 1; }
        sleep 0.1
    done
    grep "listening on" "$WORK/server.log"
}
# stop_server: SIGTERM; the server must exit 0 with no panic in its log.
stop_server() {
    kill -TERM "$SERVER_PID"
    status=0
    wait "$SERVER_PID" || status=$?
    SERVER_PID=
    [ "$status" -eq 0 ] || { tail -20 "$WORK/server.log"; echo "FAIL: bge-serve exited $status after SIGTERM" >&2; exit 1; }
    if grep -q "panicked" "$WORK/server.log"; then
        grep -B2 -A5 panicked "$WORK/server.log"; echo "FAIL: a panic in the server log" >&2; exit 1
    fi
}
start_server "$MODELS"
# Broken model directories are skipped and reported, never fatal.
curl -fsS "http://127.0.0.1:$PORT/health" | python3 -c '
import json, sys
h = json.load(sys.stdin)
failed = {f["directory"] for f in h["failed"]}
served = {m["name"] for m in h["models"]}
assert "all-MiniLM-L6-v2" in served and "broken-config" in failed and "broken-truncated" in failed, h
print("ok: /health serves %d models, reports %d broken directories" % (len(served), len(failed)))'

python3 tests/http/check.py "http://127.0.0.1:$PORT" "$KEY" "$SERVER_PID" engine/tests/goldens/all-MiniLM-L6-v2.json ${PSQL_COMMAND:+"$PSQL_COMMAND"} ||
    { tail -20 "$WORK/server.log"; exit 1; }

stop_server

echo "== bge-serve over $MODELS/rerankers: POST /rerank"
start_server "$MODELS/rerankers"
# SQL's bge_rerank needs the same reranker directory as bge.model_dir: only the scratch cluster
# (a superuser session on this machine) is given it.
python3 tests/http/check.py --rerank "http://127.0.0.1:$PORT" "$KEY" engine/tests/goldens/rerankers.json \
    ${STARTED_CLUSTER:+"$PSQL_COMMAND" "$MODELS/rerankers"} || { tail -20 "$WORK/server.log"; exit 1; }
stop_server
echo "== bge-serve tests passed"
