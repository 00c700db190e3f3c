#!/usr/bin/env bash
# A scratch PostgreSQL cluster for the demo, the SQL tests and the SQL benchmark.
#
#   scripts/postgres/cluster.sh start [setting=value ...]   (re)creates and starts it
#   scripts/postgres/cluster.sh stop
#   scripts/postgres/cluster.sh psql [psql args]
#
# PG_BGE_PG picks the major: 15 (default; Debian's packages) or 18 (with pgvector; the tree
# scripts/setup.sh unpacks, see scripts/postgres/versions.sh). Each major has its own cluster, so both
# can run at once. It runs as the operating-system user "postgres" (initdb refuses root), in
# $PG_BGE_CLUSTER (default /tmp/pg_bge_cluster for 15, /tmp/pg_bge_cluster18 for 18), on a Unix
# socket in /tmp, port $PG_BGE_PORT (default 5499 for 15, 5518 for 18).
set -euo pipefail
. "$(dirname "$0")/versions.sh"
PG_CONFIG=$(pg_config_of "$PG_BGE_PG") || exit 2
BIN=$(dirname "$PG_CONFIG")
case "$PG_BGE_PG" in
15) DATA=${PG_BGE_CLUSTER:-/tmp/pg_bge_cluster} PORT=${PG_BGE_PORT:-5499} ;;
*) DATA=${PG_BGE_CLUSTER:-/tmp/pg_bge_cluster$PG_BGE_PG} PORT=${PG_BGE_PORT:-55$PG_BGE_PG} ;;
esac
[ -x "$BIN/initdb" ] || { echo "cluster.sh: no PostgreSQL $PG_BGE_PG in $BIN; run scripts/setup.sh" >&2; exit 1; }

as_postgres() {
    if [ "$(id -un)" = postgres ]; then "$@"; elif [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

case "${1:-}" in
start)
    shift
    as_postgres "$BIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
    if [ "$(id -u)" -eq 0 ]; then rm -rf "$DATA"; else sudo rm -rf "$DATA"; fi
    mkdir -p "$(dirname "$DATA")"
    as_postgres "$BIN/initdb" -D "$DATA" -E UTF8 --locale=C.UTF-8 -A trust --no-sync >/dev/null
    {
        echo "port = $PORT"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '/tmp'"
        echo "fsync = off"
        for setting in "$@"; do echo "$setting"; done
    } | as_postgres tee -a "$DATA/postgresql.conf" >/dev/null
    # No Rust backtraces in error messages: the SQL tests' expected output must not depend on them.
    # BGE_CPU_ISA (forcing a CPU kernel family) reaches the server only when set here.
    as_postgres env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE ${BGE_CPU_ISA:+BGE_CPU_ISA=$BGE_CPU_ISA} "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w start >/dev/null
    echo "cluster.sh: PostgreSQL $PG_BGE_PG running on /tmp port $PORT (log: $DATA/server.log)${BGE_CPU_ISA:+, BGE_CPU_ISA=$BGE_CPU_ISA}"
    ;;
stop)
    as_postgres "$BIN/pg_ctl" -D "$DATA" -m fast stop >/dev/null 2>&1 || true
    ;;
port)
    echo "$PORT"
    ;;
psql)
    shift
    # The major's own psql (18's, from the wheel, is built without readline: no line editing).
    exec "$BIN/psql" -h /tmp -p "$PORT" -U postgres -X "$@"
    ;;
*)
    echo "usage: [PG_BGE_PG=15|18] $0 start [setting=value ...] | stop | psql [args] | port" >&2
    exit 2
    ;;
esac
