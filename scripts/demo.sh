#!/usr/bin/env bash
# Installs pg_bge and its model on a fresh Debian machine, starts a scratch PostgreSQL cluster
# and runs a small RAG session in it (scripts/demo.sql): a table whose embeddings a generated
# column keeps in sync, 500 passages of the Python documentation, a ranked search. pg_bge is
# preloaded, so its model server computes every embedding.
#
#   bash scripts/demo.sh                  PostgreSQL 18 with pgvector: vector(384) column, HNSW index
#   PG_BGE_PG=15 bash scripts/demo.sh     PostgreSQL 15 (Debian): real[] column and pg_bge's <=>
#
# The cluster keeps running afterwards: scripts/postgres/cluster.sh psql to try more (with the same
# PG_BGE_PG), scripts/postgres/cluster.sh stop to end it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PG_BGE_PG=${PG_BGE_PG:-18}
. scripts/postgres/versions.sh

scripts/setup.sh
PG_CONFIG=$(pg_config_of "$PG_BGE_PG")
scripts/postgres/install.sh "$PG_CONFIG"
# Preloaded: the model server holds the model once and batches every connection's requests.
scripts/postgres/cluster.sh start "shared_preload_libraries = 'pg_bge'"
scripts/postgres/cluster.sh psql -v ON_ERROR_STOP=1 -e -f scripts/demo.sql
echo
echo "demo: the cluster is still running; connect with PG_BGE_PG=$PG_BGE_PG scripts/postgres/cluster.sh psql"
