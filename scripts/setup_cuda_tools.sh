#!/usr/bin/env bash
# Installs the CUDA pieces pg_bge's kernel-compile test needs on a machine without CUDA:
# NVRTC (libnvrtc.so.13) and the CUDA headers (cuda_fp16.h, cuda_bf16.h, from the runtime
# wheel), from PyPI into <repo>/.cuda-tools. Idempotent; no GPU and no driver needed.
# Prints the environment the test reads:  eval "$(scripts/setup_cuda_tools.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${BGE_CUDA_TOOLS:-$PWD/.cuda-tools}"
# Pinned so CI compiles with the same NVRTC every run; bump deliberately.
NVRTC_VERSION="${BGE_NVRTC_VERSION:-13.0.88}"

lib_dir() { find "$TOOLS" -path '*/nvidia/cu*/lib' -type d 2>/dev/null | head -n1; }
have_tools() {
    local lib; lib="$(lib_dir)"
    [ -n "$lib" ] && ls "$lib"/libnvrtc.so.* >/dev/null 2>&1 && [ -f "$lib/../include/cuda_fp16.h" ]
}

if ! have_tools; then
    echo "setup_cuda_tools: installing NVRTC $NVRTC_VERSION and CUDA headers into $TOOLS" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
        --target "$TOOLS" "nvidia-cuda-nvrtc==$NVRTC_VERSION" "nvidia-cuda-runtime==$NVRTC_VERSION" >&2
fi
have_tools || { echo "setup_cuda_tools: NVRTC or cuda_fp16.h missing under $TOOLS after install" >&2; exit 1; }

LIB="$(lib_dir)"
# cudarc looks NVRTC up by plain names (libnvrtc.so, libnvrtc.so.13, ...); the wheel ships only
# the versioned file, so give it the unversioned name too.
NVRTC_SO="$(ls "$LIB"/libnvrtc.so.* | grep -v builtins | sort | tail -n1)"
ln -sf "$(basename "$NVRTC_SO")" "$LIB/libnvrtc.so"

echo "export BGE_CUDA_TOOLS=\"$TOOLS\""
echo "export LD_LIBRARY_PATH=\"$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
