#!/usr/bin/env bash
# Runs every pg_bge test from a fresh Debian machine: installs what is missing (scripts/setup.sh),
# runs the engine tests (plain cargo test), installs the extension into PostgreSQL 15 and runs
# the SQL tests (pg_regress) in a scratch cluster. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== CUDA tools: NVRTC from PyPI into .cuda-tools, so the kernel compile test runs without a GPU"
scripts/setup_cuda_tools.sh >/dev/null

echo "== engine tests (cargo test -p bge-engine)"
cargo test -p bge-engine
# Again with output shown, so a CI log says loudly which GPU tests were skipped for lack of a GPU.
cargo test -p bge-engine --test cuda -- --nocapture 2>&1 | grep -E "SKIPPED|test result" || true

echo "== extension build and install"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
if [ "$(id -u)" -eq 0 ]; then
    cargo pgrx install --release --pg-config "$PG_CONFIG"
else
    cargo pgrx install --release --sudo --pg-config "$PG_CONFIG"
fi

echo "== SQL tests (pg_regress)"
WORK=/tmp/pg_bge_regress
rm -rf "$WORK" && mkdir -p "$WORK/out"
python3 scripts/make_test_models.py "$($PG_CONFIG --sharedir)/bge_models/all-MiniLM-L6-v2" "$WORK/models"
chmod -R a+rX "$WORK"
scripts/pg_cluster.sh start "bge.model_dir = '$WORK/models'"
trap 'scripts/pg_cluster.sh stop' EXIT
status=0
/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress \
    --bindir=/usr/lib/postgresql/15/bin --host=/tmp --port="${PG_BGE_PORT:-5499}" --user=postgres \
    --inputdir=tests/pg_regress --outputdir="$WORK/out" --dbname=pg_bge_regress \
    setup embed goldens operators generated errors m3 m3_goldens || status=$?
if [ $status -ne 0 ]; then
    cat "$WORK/out/regression.diffs" 2>/dev/null | head -300
    echo "SQL tests failed; full diff in $WORK/out/regression.diffs" >&2
fi
exit $status
