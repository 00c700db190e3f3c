#!/usr/bin/env bash
# Batch-1 latency of a short search query through SQL (`SELECT bge_embed($query)` on one
# connection, psql's \timing: parse, plan, tokenise, forward, pool, the result back) for each
# bge.precision this CPU runs and bge.threads 1 and 2, against onnxruntime's batch-1
# session.run of the same tokens on 1 and 2 threads, in the same run. Rounds interleave the
# runtimes so load that comes and goes on the machine affects them alike; medians of rounds.
#
#   bash benches/sql_latency_bench.sh [CALLS=200] [ROUNDS=3] [ONNX=]
# Needs the extension installed (scripts/demo.sh or scripts/test.sh), python3 with onnxruntime
# and tokenizers, and an ONNX export of the model (benches/export_onnx.py; without ONNX given,
# compare_peers.py exports it, which needs PyTorch). Uses the scratch cluster of
# scripts/postgres/cluster.sh (restarted) of the major PG_BGE_PG picks (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/postgres/versions.sh
CALLS=${1:-200}
ROUNDS=${2:-3}
ONNX=${3:-}
QUERY=${BGE_QUERY:-"how do vector databases index embeddings"}
MODEL_DIR="$("$(pg_config_of "$PG_BGE_PG")" --sharedir)/bge_models"
cargo build --release -q -p bge-engine --example throughput

scripts/postgres/cluster.sh start >/dev/null
trap 'scripts/postgres/cluster.sh stop' EXIT
scripts/postgres/cluster.sh psql -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION IF NOT EXISTS pg_bge;"
tokens=$(scripts/postgres/cluster.sh psql -Atq -c "SELECT bge_token_count('${QUERY//\'/\'\'}')")

# One connection per setting: the model loads in the warm-up call, then CALLS timed calls.
sql_latency() {
    local precision=$1 threads=$2
    {
        echo "SELECT bge_embed('warm up');"
        echo '\timing on'
        for _ in $(seq "$CALLS"); do echo "SELECT bge_embed('${QUERY//\'/\'\'}');"; done
    } > /tmp/pg_bge_latency.sql
    PGOPTIONS="-c bge.precision=$precision -c bge.threads=$threads" \
        scripts/postgres/cluster.sh psql -q -v ON_ERROR_STOP=1 -o /dev/null -f /tmp/pg_bge_latency.sql 2>/dev/null \
        | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' \
        | python3 -c "import statistics, sys; print(statistics.median(float(l) for l in sys.stdin))"
}

results=""
for round in $(seq "$ROUNDS"); do
    for precision in fp32 bf16 int8; do
        for threads in 1 2; do
            ms=$(sql_latency "$precision" "$threads" || true)
            [ -n "$ms" ] && results+="$precision $threads $ms"$'\n'
        done
    done
done
echo "== onnxruntime (and the engine without SQL) in the same run: benches/compare_peers.py"
python3 benches/compare_peers.py "$MODEL_DIR/all-MiniLM-L6-v2" benches/corpus.txt --skip-throughput \
    --latency-threads 1,2 --rounds "$ROUNDS" --query "$QUERY" ${ONNX:+--onnx "$ONNX"} | tee /tmp/pg_bge_peers.txt
python3 - "$results" "$tokens" /tmp/pg_bge_peers.txt <<'PY'
import re, statistics, sys
samples = {}
for line in sys.argv[1].split("\n"):
    if line.strip():
        p, t, ms = line.split()
        samples.setdefault((p, int(t)), []).append(float(ms))
ort = {}
for line in open(sys.argv[3]):
    # The latency table's row (not the cosine line above it): two ms values with their ratios.
    m = re.match(r"onnxruntime\s+([0-9.]+)\s+[0-9.]+x\s+([0-9.]+)", line)
    if m:
        ort = {1: float(m.group(1)), 2: float(m.group(2))}
print(f"\nSQL batch-1 latency of a {sys.argv[2]}-token query (bge_token_count), `SELECT bge_embed(q)`, median of {len(next(iter(samples.values())))} rounds")
print(f"{'bge.precision':14} {'1 thr ms':>9} {'x ort':>6} {'2 thr ms':>9} {'x ort':>6}")
for p in ("fp32", "bf16", "int8"):
    if (p, 1) not in samples:
        print(f"{p:14} not run on this CPU")
        continue
    cells = [f"{statistics.median(samples[(p, t)]):9.3f} {ort[t] / statistics.median(samples[(p, t)]):5.2f}x" if t in ort else f"{statistics.median(samples[(p, t)]):9.3f}" for t in (1, 2)]
    print(f"{p:14} " + " ".join(cells))
PY
