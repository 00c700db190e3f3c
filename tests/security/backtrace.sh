#!/usr/bin/env bash
# What an ordinary role sees of errors: never a Rust backtrace, never a server path, even with
# RUST_BACKTRACE=full (and RUST_LIB_BACKTRACE=1) in the server's environment. scripts/postgres/cluster.sh
# starts its clusters without those variables, so this script starts its own, twice: computing
# in each backend, and through the model server (shared_preload_libraries). As an ordinary
# role it triggers
#   - a Rust panic (text that is not UTF-8 in a LATIN1 database, where pgrx's conversion to
#     &str panics),
#   - a cancel in the middle of a long call (statement_timeout),
#   - a PostgreSQL error raised inside Rust frames (bge_backfill's UPDATE in a read-only
#     transaction, as on a standby),
#   - pg_bge's own errors (an unknown model, a broken model file), bge_models() and
#     bge_server_status(),
# and fails (exit 1) if the client's output holds "backtrace", ".rs:" (a Rust source location)
# or the model directory.
#
#   tests/security/backtrace.sh MODEL_DIR     (MODEL_DIR as scripts/models/make_test_models.py makes it)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=${1:?usage: tests/security/backtrace.sh MODEL_DIR}
MODELS=${MODELS%/}
export PG_BGE_PG=${PG_BGE_PG:-15}
. scripts/postgres/versions.sh
BIN=$(dirname "$(pg_config_of "$PG_BGE_PG")")
DATA=${PG_BGE_BT_CLUSTER:-/tmp/pg_bge_cluster_bt}
PORT=${PG_BGE_BT_PORT:-5532}
OUT=$(mktemp -d /tmp/pg_bge_backtrace.XXXXXX)

as_postgres() {
    if [ "$(id -un)" = postgres ]; then "$@"; elif [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}
stop() { as_postgres "$BIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true; }
trap 'stop; rm -rf "$OUT"' EXIT

# start SETTING...: a fresh cluster whose postmaster has RUST_BACKTRACE=full in its environment.
start() {
    stop
    if [ "$(id -u)" -eq 0 ]; then rm -rf "$DATA"; else sudo rm -rf "$DATA"; fi
    as_postgres "$BIN/initdb" -D "$DATA" -E UTF8 --locale=C.UTF-8 -A trust --no-sync >/dev/null
    {
        echo "port = $PORT"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '/tmp'"
        echo "fsync = off"
        echo "bge.model_dir = '$MODELS'"
        for setting in "$@"; do echo "$setting"; done
    } | as_postgres tee -a "$DATA/postgresql.conf" >/dev/null
    as_postgres env RUST_BACKTRACE=full RUST_LIB_BACKTRACE=1 "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w start >/dev/null
}
psql_as() {
    local user=$1 db=$2
    shift 2
    "$BIN/psql" -h /tmp -p "$PORT" -U "$user" -d "$db" -X "$@"
}

status=0
for mode in in-process server; do
    settings=()
    [ "$mode" = server ] && settings=("shared_preload_libraries = 'pg_bge'")
    echo "== backtraces and paths ($mode, RUST_BACKTRACE=full)"
    start "${settings[@]}"
    psql_as postgres postgres -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE EXTENSION pg_bge;
CREATE ROLE regress_bge_bt LOGIN;
CREATE SCHEMA bt AUTHORIZATION regress_bge_bt;
CREATE DATABASE bt_latin1 ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C';
\c bt_latin1
CREATE EXTENSION pg_bge;
SQL
    client="$OUT/$mode.out"
    {
        # A Rust panic, in a backend with the library loaded (the first call loads it).
        psql_as regress_bge_bt bt_latin1 <<'SQL'
SELECT bge_embed('cafe');
SELECT bge_embed(convert_from('\x636166e9', 'LATIN1'));
SQL
        psql_as regress_bge_bt postgres <<'SQL'
SELECT array_length(bge_embed('load the library first'), 1) AS dims;
SET statement_timeout = '50ms';
SELECT count(*) FROM bge_embed(array_fill(repeat('word ', 300), ARRAY[20000]), 'all-MiniLM-L6-v2');
RESET statement_timeout;
CREATE TABLE bt.docs (body text, emb real[]);
INSERT INTO bt.docs VALUES ('one'), ('two');
SET default_transaction_read_only = on;
CALL bge_backfill('bt.docs', 'body', 'emb');
RESET default_transaction_read_only;
SELECT bge_embed('x', 'no-such-model');
SELECT bge_embed('x', 'broken-truncated');
SELECT bge_embed('x', 'broken-no-tokenizer');
SELECT name, error FROM bge_models() ORDER BY name;
SELECT * FROM bge_server_status();
SELECT array_length(bge_embed('still alive'), 1) AS dims;
SQL
    } >"$client" 2>&1 || true
    stop
    # The client must have seen the errors this run is about.
    for expected in "canceling statement due to statement timeout" "read-only transaction" "not installed" "UTF-8"; do
        if ! grep -qF "$expected" "$client"; then
            echo "FAIL ($mode): the client output lacks \"$expected\"" >&2
            status=1
        fi
    done
    for leak in "backtrace" ".rs:" "$MODELS" "$(realpath "$MODELS")"; do
        if grep -qiF -- "$leak" "$client"; then
            echo "FAIL ($mode): an ordinary role saw \"$leak\":" >&2
            grep -iF -B2 -A2 -- "$leak" "$client" | head -20 >&2
            status=1
        fi
    done
    [ $status -eq 0 ] && echo "ok: no backtrace, Rust source location or model directory in $(wc -l <"$client") lines of client output"
done
exit $status
