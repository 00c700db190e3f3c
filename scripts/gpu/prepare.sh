#!/usr/bin/env bash
# Fills .gpu/ (git-ignored) with what a GPU machine without Rust needs to run the CUDA tests and
# the benchmark: the stripped test and benchmark binaries and an f16 copy of all-MiniLM-L6-v2
# (half the f32 one's size, so what travels to the GPU machine stays small).
# Then, on the GPU machine, from the repository root: bash scripts/gpu/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu
test_bin=$(cargo test -p bge-engine --test cuda --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"): print(m["executable"])' | tail -n1)
cargo build --release -p bge-engine --example cuda_bench
strip -o .gpu/cuda_test "$test_bin"
strip -o .gpu/cuda_bench target/release/examples/cuda_bench
[ -f .gpu/models/all-MiniLM-L6-v2/model.safetensors ] ||
    python3 scripts/models/make_fp16_model.py "${BGE_TEST_MODEL_DIR:-models}/all-MiniLM-L6-v2" .gpu/models/all-MiniLM-L6-v2
du -sh .gpu
