#!/usr/bin/env bash
# Installs pg_bge and its model on a fresh Debian machine, starts a PostgreSQL 15 cluster and
# embeds and ranks a few passages in it. The cluster keeps running afterwards:
#   scripts/pg_cluster.sh psql        to try more;   scripts/pg_cluster.sh stop   to end it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
if [ "$(id -u)" -eq 0 ]; then
    cargo pgrx install --release --pg-config "$PG_CONFIG"
else
    cargo pgrx install --release --sudo --pg-config "$PG_CONFIG"
fi
scripts/pg_cluster.sh start
scripts/pg_cluster.sh psql -v ON_ERROR_STOP=1 -e -f scripts/demo.sql
echo
echo "demo: the cluster is still running; connect with scripts/pg_cluster.sh psql"
