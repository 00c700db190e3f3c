#!/usr/bin/env bash
# Installs NVRTC, the CUDA runtime compiler, from PyPI into <repo>/.cuda-tools so that
# `cargo test -p bge-engine --test cuda` can compile every kernel in kernels/ on a machine with
# no GPU, no driver and no CUDA toolkit. Idempotent. The kernels include no CUDA header, so
# NVRTC (libnvrtc.so + libnvrtc-builtins.so) is all they need.
#
# The test finds .cuda-tools by itself; for other uses print the environment with
#   eval "$(scripts/gpu/install_nvrtc.sh)"
set -euo pipefail
cd "$(dirname "$0")/../.."

TOOLS="${BGE_CUDA_TOOLS:-$PWD/.cuda-tools}"
# Pinned so every CI run compiles with the same NVRTC; 13.0 is also what a CUDA 13.0 driver
# (the GPU machine's 580 series) accepts PTX from. Bump deliberately.
NVRTC_VERSION="${BGE_NVRTC_VERSION:-13.0.88}"

lib_dir() { find "$TOOLS" -path '*/nvidia/cu*/lib' -type d 2>/dev/null | sort | head -n1; }
have_nvrtc() {
    local lib; lib="$(lib_dir)"
    [ -n "$lib" ] && ls "$lib"/libnvrtc.so.* >/dev/null 2>&1 && ls "$lib"/libnvrtc-builtins.so.* >/dev/null 2>&1
}

if ! have_nvrtc; then
    echo "setup_cuda_tools: installing nvidia-cuda-nvrtc==$NVRTC_VERSION into $TOOLS" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --upgrade \
        --target "$TOOLS" "nvidia-cuda-nvrtc==$NVRTC_VERSION" >&2
fi
have_nvrtc || { echo "setup_cuda_tools: no libnvrtc.so.* / libnvrtc-builtins.so.* under $TOOLS after install" >&2; exit 1; }

LIB="$(lib_dir)"
# cudarc tries plain names first (libnvrtc.so); the wheel ships only the versioned file.
NVRTC_SO="$(ls "$LIB"/libnvrtc.so.* | sort | tail -n1)"
ln -sf "$(basename "$NVRTC_SO")" "$LIB/libnvrtc.so"

echo "export BGE_CUDA_TOOLS=\"$TOOLS\""
echo "export LD_LIBRARY_PATH=\"$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
