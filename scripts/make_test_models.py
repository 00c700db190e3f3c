#!/usr/bin/env python3
"""Builds the model directory the SQL tests run against (stdlib only):

    scripts/make_test_models.py SOURCE_MODEL_DIR DEST

DEST/all-MiniLM-L6-v2           the model (files symlinked)
DEST/all-MiniLM-L6-v2-cls512    CLS pooling, max_seq_length 512 (same edit as the goldens)
DEST/broken-truncated           model.safetensors cut short
DEST/broken-shapes              a tensor's declared shape transposed (same byte size)
DEST/broken-no-tokenizer        tokenizer.json missing
DEST/broken-config              config.json not JSON
DEST/broken-unsupported         config.json of an architecture pg_bge does not run
"""
import json
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_texts import make_cls512_variant  # noqa: E402


def linked_copy(src, dest, skip=()):
    os.makedirs(dest)
    for root, _, files in os.walk(src):
        rel = os.path.relpath(root, src)
        os.makedirs(os.path.join(dest, rel), exist_ok=True)
        for f in files:
            if os.path.join(rel, f).lstrip("./") in skip or f in skip:
                continue
            os.symlink(os.path.join(root, f), os.path.join(dest, rel, f))


def replace(dest, name, data):
    path = os.path.join(dest, name)
    if os.path.lexists(path):
        os.remove(path)
    with open(path, "wb") as f:
        f.write(data)


def main():
    src, dest = os.path.abspath(sys.argv[1]), sys.argv[2]
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    linked_copy(src, os.path.join(dest, "all-MiniLM-L6-v2"))
    make_cls512_variant(os.path.join(dest, "all-MiniLM-L6-v2"), dest)

    weights = open(os.path.join(src, "model.safetensors"), "rb").read()

    d = os.path.join(dest, "broken-truncated")
    linked_copy(src, d, skip={"model.safetensors"})
    replace(d, "model.safetensors", weights[: len(weights) // 3])

    d = os.path.join(dest, "broken-shapes")
    linked_copy(src, d, skip={"model.safetensors"})
    (n,) = struct.unpack("<Q", weights[:8])
    header = json.loads(weights[8 : 8 + n])
    name = next(k for k in header if k.endswith("encoder.layer.0.intermediate.dense.weight"))
    header[name]["shape"] = list(reversed(header[name]["shape"]))
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    replace(d, "model.safetensors", struct.pack("<Q", len(text)) + text + weights[8 + n :])

    d = os.path.join(dest, "broken-no-tokenizer")
    linked_copy(src, d, skip={"tokenizer.json"})

    d = os.path.join(dest, "broken-config")
    linked_copy(src, d, skip={"config.json"})
    replace(d, "config.json", b'{"model_type": "bert", "hidden_size": ')

    d = os.path.join(dest, "broken-unsupported")
    linked_copy(src, d, skip={"config.json"})
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["model_type"] = "gpt2"
    replace(d, "config.json", json.dumps(cfg).encode())

    for root, dirs, files in os.walk(dest):
        os.chmod(root, 0o755)
    print(f"make_test_models: test models in {dest}")


if __name__ == "__main__":
    main()
