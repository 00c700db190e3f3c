#!/usr/bin/env bash
# Builds pg_bge in release mode and installs it into the PostgreSQL whose pg_config is given
# (default: PATH's): the library, the control file, the current version's generated SQL and
# the upgrade scripts (cargo pgrx install), plus the install scripts of older releases
# (sql/pg_bge--<version>.sql), so that CREATE EXTENSION pg_bge VERSION '<older>' works too.
#
#   scripts/postgres/install.sh [/path/to/pg_config]
set -euo pipefail
cd "$(dirname "$0")/../.."
PG_CONFIG=${1:-$(command -v pg_config)}
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
cargo pgrx install --release ${sudo:+--sudo} --pg-config "$PG_CONFIG"
"${sudo[@]}" install -m 644 sql/pg_bge--[0-9]*.sql "$("$PG_CONFIG" --sharedir)/extension/"
