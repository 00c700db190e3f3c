#!/usr/bin/env bash
# Runs every pg_bge test from a fresh Debian machine: installs what is missing (scripts/setup.sh),
# runs the engine tests (plain cargo test), installs the extension into PostgreSQL 15 and runs
# the SQL tests (pg_regress) in a scratch cluster, once in-process and once through the model
# server (with its fault tests), then on PostgreSQL 18 through the model server with the
# pgvector tests added. The goldens (engine and SQL) run once per CPU kernel family this machine
# has (BGE_CPU_ISA), so an AVX-512 machine proves the AVX2 and portable paths too. Exits
# non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/postgres/versions.sh

scripts/setup.sh

# Kernel families this CPU runs, best first: the rule of bge-engine's Isa::available.
cpu_isas() {
    local flags
    flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    [[ $flags == *" avx512f "* ]] && echo avx512
    [[ $flags == *" avx2 "* && $flags == *" fma "* ]] && echo avx2
    echo portable
}
ISAS=($(cpu_isas))
echo "== CPU kernel families here: ${ISAS[*]} (the first is the default)"

echo "== CUDA tools: NVRTC from PyPI into .cuda-tools, so the kernel compile test runs without a GPU"
scripts/gpu/install_nvrtc.sh >/dev/null

echo "== lints (cargo clippy --workspace --all-targets -- -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

echo "== engine tests (cargo test -p bge-engine)"
cargo test -p bge-engine
# Again with output shown, so a CI log says loudly which GPU tests were skipped for lack of a GPU.
cargo test -p bge-engine --test cuda -- --nocapture 2>&1 | grep -E "SKIPPED|test result" || true

echo "== CUDA kernels on the CPU: kernels/*.cu on the emulated device (cargo test -p bge-cuda-emulator)"
cargo test -p bge-cuda-emulator
for isa in "${ISAS[@]:1}"; do
    echo "== engine goldens on the $isa kernels (BGE_CPU_ISA=$isa)"
    BGE_CPU_ISA=$isa cargo test -p bge-engine --test goldens --test m3 --test batching --test ops --test gemma2 --test decoder_ops --test rerank
done

# install_for MAJOR: builds pg_bge for that major (cargo pgrx picks the pgNN feature from its
# pg_config) and installs it there.
install_for() {
    echo "== extension build and install (PostgreSQL $1)"
    scripts/postgres/install.sh "$(pg_config_of "$1")"
}

WORK=${PG_BGE_REGRESS_DIR:-/tmp/pg_bge_regress}
rm -rf "$WORK" && mkdir -p "$WORK"
python3 scripts/models/make_test_models.py "$("$(pg_config_of 15)" --sharedir)/bge_models/all-MiniLM-L6-v2" "$WORK/models"
chmod -R a+rX "$WORK"
trap 'PG_BGE_PG=15 scripts/postgres/cluster.sh stop; PG_BGE_PG=18 scripts/postgres/cluster.sh stop' EXIT

# regress MAJOR NAME TEST...: a fresh cluster of that major (with the caller's BGE_CPU_ISA and
# CLUSTER_SETTINGS), then pg_regress. Every run compares against the same expected output.
CLUSTER_SETTINGS=()
# The model server: preloaded, with slots small enough that requests split and results come
# back in pieces.
SERVER_SETTINGS=("shared_preload_libraries = 'pg_bge'" "bge.server_slot_size = '64kB'")
regress() {
    local major=$1 name=$2 out="$WORK/out-$2" status=0 pgc
    shift 2
    pgc=$(pg_config_of "$major")
    mkdir -p "$out"
    PG_BGE_PG=$major scripts/postgres/cluster.sh start "bge.model_dir = '$WORK/models'" "${CLUSTER_SETTINGS[@]}"
    "$("$pgc" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
        --bindir="$("$pgc" --bindir)" --host=/tmp --port="$(PG_BGE_PG=$major scripts/postgres/cluster.sh port)" --user=postgres \
        --inputdir=tests/pg_regress --outputdir="$out" --dbname=pg_bge_regress "$@" || status=$?
    PG_BGE_PG=$major scripts/postgres/cluster.sh stop
    if [ $status -ne 0 ]; then
        head -300 "$out/regression.diffs" 2>/dev/null || true
        echo "SQL tests ($name, PostgreSQL $major) failed; full diff in $out/regression.diffs" >&2
    fi
    return $status
}

regress_server() {
    local CLUSTER_SETTINGS=("${SERVER_SETTINGS[@]}")
    regress "$@"
}

SQL_TESTS=(setup embed goldens operators generated chunk chunks errors m3 m3_goldens hardening planner vectorize gemma2 rerank rerank_goldens batch)
status=0
install_for 15
echo "== SQL tests on PostgreSQL 15 (pg_regress), every call in its own backend"
regress 15 all "${SQL_TESTS[@]}" || status=1
echo "== SQL tests on PostgreSQL 15 through the model server (shared_preload_libraries)"
regress_server 15 server "${SQL_TESTS[@]}" server || status=1
echo "== model server under concurrency, cancel, disconnect and worker restart (tests/server/faults.sh)"
tests/server/faults.sh "$WORK/models" || status=1
echo "== model server fairness between roles and its memory budget (tests/server/fairness.sh)"
tests/server/fairness.sh "$WORK/models" || status=1
echo "== bge_backfill and bge_vectorize under concurrent writers, cancel and restart (tests/vectorize/stream.sh)"
tests/vectorize/stream.sh "$WORK/models" || status=1
echo "== a chunk table under four concurrent writers (tests/vectorize/chunks.sh)"
tests/vectorize/chunks.sh "$WORK/models" || status=1
echo "== no Rust backtrace and no server path for ordinary roles, with RUST_BACKTRACE=full (tests/security/backtrace.sh)"
tests/security/backtrace.sh "$WORK/models" || status=1
echo "== pg_bge as hostile ordinary roles: vectorizer, backfill, registrations (tests/security/attacks.sh)"
tests/security/attacks.sh "$WORK/models" || status=1
echo "== upgrade from release 0.1.0 with only this library installed (tests/operations/upgrade.sh)"
tests/operations/upgrade.sh "$WORK/models" || status=1
echo "== a streaming standby and a logical-replication subscriber (tests/operations/replication.sh)"
tests/operations/replication.sh "$WORK/models" || status=1
echo "== the HTTP server bge-serve: openai client, hosted shapes, junk, bitwise against SQL (tests/http/run.sh)"
tests/http/run.sh "$WORK/models" || status=1
for isa in "${ISAS[@]:1}"; do
    echo "== SQL goldens on the $isa kernels (BGE_CPU_ISA=$isa)"
    BGE_CPU_ISA=$isa regress 15 "$isa" setup embed goldens m3 m3_goldens rerank_goldens || status=1
done

start=$SECONDS
install_for 18
echo "== SQL tests on PostgreSQL 18 through the model server, and pgvector (pg_regress)"
regress_server 18 pg18 "${SQL_TESTS[@]}" server pgvector rerank_rag || status=1
echo "== dump and restore: pg_restore, --single-transaction, plain; without the model (tests/operations/dump_restore.sh)"
tests/operations/dump_restore.sh "$WORK/models" || status=1
echo "== PostgreSQL 18 build, install and tests took $((SECONDS - start)) s"
echo "== packages: the .deb in place of the source-built files, the PostgreSQL 18 tarball in a copy of the tree (tests/operations/package.sh)"
tests/operations/package.sh "$WORK/models" || status=1

echo "== cargo pgrx test pg15 (the #[pg_test] suite in src/tests.rs)"
if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses root: the test cluster runs as an unprivileged user.
    id pgrx_test >/dev/null 2>&1 || useradd -m pgrx_test
    rm -rf /tmp/pg_bge_pgrx_test && mkdir -p /tmp/pg_bge_pgrx_test && chown pgrx_test /tmp/pg_bge_pgrx_test
    cargo pgrx test pg15 --runas pgrx_test --pgdata /tmp/pg_bge_pgrx_test/data || status=1
else
    cargo pgrx test pg15 || status=1
fi
# cargo pgrx test leaves its debug build (with the test functions) installed in PostgreSQL 15,
# about ten times slower than the release build: put the release build back, so a server
# started after the tests (the benchmarks, the demo's cluster) runs what users get.
install_for 15 || status=1
exit $status
