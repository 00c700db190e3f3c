#!/usr/bin/env bash
# Installs everything pg_bge needs on a Debian machine, idempotently (as root or with sudo):
# PostgreSQL 15 and its server headers, clang, cargo-pgrx 0.18.1 (initialised for PG 15),
# and the all-MiniLM-L6-v2 model in $(pg_config --sharedir)/bge_models and ./models.
# Needs a Rust toolchain (cargo) already on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }

packages=(postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo python3 python3-pip curl ca-certificates)
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

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.1"; then
    echo "setup: installing cargo-pgrx 0.18.1 (takes a few minutes)"
    cargo install cargo-pgrx --version 0.18.1 --locked
fi
if ! grep -qs '^pg15 *= *"'"$PG_CONFIG"'"' "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    cargo pgrx init --pg15 "$PG_CONFIG"
fi

# The model: once for the server (bge.model_dir's default) and once for `cargo test`.
$SUDO scripts/fetch_model.sh "$($PG_CONFIG --sharedir)/bge_models"
scripts/fetch_model.sh "$PWD/models"
