#!/usr/bin/env bash
# Runs on a GPU machine (no Rust needed), from the repository root, after scripts/gpu/prepare.sh
# filled .gpu/ elsewhere: the CUDA test suite with nothing skipped, the benchmark against
# PyTorch fp16 (benches/cuda_bench.py), and a per-kernel profile with Nsight Compute when `ncu`
# is there. Logs go to $OUT (or /tmp/pg_bge_gpu_check).
set -o pipefail
OUT="${OUT:-/tmp/pg_bge_gpu_check}"; mkdir -p "$OUT"
# The CUDA libraries: PyTorch's pip packages, then the toolkit.
SP=$(python3 -c 'import site; print(site.getsitepackages()[0])')
LIBS=$(ls -d "$SP"/nvidia/cu*/lib 2>/dev/null | tr '\n' ':')
export BGE_CUDA_LIB_DIR="${LIBS}/usr/local/cuda/lib64"
export LD_LIBRARY_PATH="${LIBS}/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export BGE_TEST_MODEL_DIR="$PWD/.gpu/models" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader

timeout 300 .gpu/cuda_test --test-threads=1 --nocapture 2>&1 | tee "$OUT/test.log" \
    | grep -E '^test |SKIPPED|panicked|test result'
rc=$?
python3 benches/cuda_bench.py --engine .gpu/cuda_bench --model-dir .gpu/models/all-MiniLM-L6-v2 \
    --batch-sizes 1,64,256 --lengths 16,128,512 --warmup 2 --reps 7 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
tail -n 24 "$OUT/bench.log"

command -v ncu >/dev/null || { echo "ncu not found: no per-kernel profile"; exit $rc; }
python3 -c "import sys, json; sys.path.insert(0, 'benches'); import cuda_bench as cb
json.dump(cb.make_batches([64], [512], 7), open('/tmp/b64x512.json', 'w'))
json.dump(cb.make_batches([256], [128], 7), open('/tmp/b256x128.json', 'w'))"
for run in bge-base-shaped:/tmp/b64x512.json bge-small-shaped:/tmp/b256x128.json; do
    model=${run%%:*}
    ncu --metrics gpu__time_duration.sum --print-summary per-kernel --csv .gpu/cuda_bench \
        --model "/tmp/pg_bge_cuda_bench/$model" --batches "${run##*:}" --warmup 1 --reps 1 \
        > "$OUT/ncu_$model.csv" 2> "$OUT/ncu_$model.err"
    echo "ncu $model (one warm-up and one timed run, ncu's locked clocks):"
    python3 - "$OUT/ncu_$model.csv" <<'PY'
import csv, io, sys
rows = [l for l in open(sys.argv[1]) if l.startswith('"')]
total = {}
for r in csv.DictReader(io.StringIO("".join(rows))):
    try:
        ns = float(r["Average"].replace(",", "")) * int(r["Invocations"])
    except (KeyError, ValueError):
        continue
    total[r["Kernel Name"][:60]] = total.get(r["Kernel Name"][:60], 0) + ns
s = sum(total.values())
for k, ns in sorted(total.items(), key=lambda kv: -kv[1]):
    print(f"  {ns / 1e6:8.3f} ms {100 * ns / s:5.1f}%  {k}")
PY
done
exit $rc
