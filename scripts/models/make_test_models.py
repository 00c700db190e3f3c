#!/usr/bin/env python3
"""Builds the model directory the SQL tests run against (stdlib only):

    scripts/models/make_test_models.py SOURCE_MODEL_DIR DEST

DEST/all-MiniLM-L6-v2           the model (files symlinked)
DEST/all-MiniLM-L6-v2-cls512    CLS pooling, max_seq_length 512 (same edit as the goldens)
DEST/broken-truncated           model.safetensors cut short
DEST/broken-shapes              a tensor's declared shape transposed (same byte size)
DEST/broken-no-tokenizer        tokenizer.json missing
DEST/broken-config              config.json not JSON
DEST/broken-unsupported         config.json of an architecture pg_bge does not run
DEST/broken-bounds              config.json with 10^12 layers
DEST/broken-modules-escape      modules.json pointing a module outside the directory
DEST/tiny-bge-m3                the tiny random-weight BGE-M3-shaped model committed in
                                engine/tests/models (XLM-RoBERTa, sparse and ColBERT heads)
DEST/tiny-bge-m3-unconverted    its heads only as .pt files (not converted to safetensors)
DEST/tiny-bge-m3-dense-only     no head files at all
DEST/decoders/tiny-gemma2       the tiny random-weight Gemma2 decoder committed in
                                engine/tests/models (sharded weights, last-token pooling;
                                scripts/goldens/make_decoder_goldens.py), and its Mistral- and
                                Qwen3-shaped siblings tiny-mistral and tiny-qwen3: a model
                                directory of their own (gemma2.sql points bge.model_dir at it),
                                so the other tests' listings of installed models stay as they are
DEST/rerankers/                 the tiny random-weight rerankers committed in engine/tests/models
                                (tiny-reranker-bert, tiny-reranker-xlmr;
                                scripts/goldens/make_reranker_goldens.py) beside the embedders a
                                retrieve-then-rerank query uses (all-MiniLM-L6-v2, tiny-bge-m3):
                                rerank.sql points bge.model_dir at it
"""
import json
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TINY_RERANKERS = ["tiny-reranker-bert", "tiny-reranker-xlmr"]
TINY_M3 = os.path.join(os.path.dirname(os.path.dirname(HERE)), "engine", "tests", "models", "tiny-bge-m3")
TINY_DECODERS = ["tiny-gemma2", "tiny-mistral", "tiny-qwen3"]
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "goldens"))
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

    d = os.path.join(dest, "broken-bounds")
    linked_copy(src, d, skip={"config.json"})
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["num_hidden_layers"] = 10**12
    replace(d, "config.json", json.dumps(cfg).encode())

    d = os.path.join(dest, "broken-modules-escape")
    linked_copy(src, d, skip={"modules.json"})
    modules = json.load(open(os.path.join(src, "modules.json")))
    for m in modules:
        if m["type"].endswith("Pooling"):
            m["path"] = "../../../etc"
    replace(d, "modules.json", json.dumps(modules).encode())

    # Copied, not linked: the server's user may not be able to read the source checkout.
    shutil.copytree(TINY_M3, os.path.join(dest, "tiny-bge-m3"))
    heads = {"sparse_linear.safetensors", "colbert_linear.safetensors"}
    d = os.path.join(dest, "tiny-bge-m3-unconverted")
    shutil.copytree(TINY_M3, d, ignore=lambda _dir, names: [n for n in names if n in heads])
    d = os.path.join(dest, "tiny-bge-m3-dense-only")
    shutil.copytree(TINY_M3, d, ignore=lambda _dir, names: [n for n in names if n.startswith(("sparse_linear", "colbert_linear"))])

    for name in TINY_DECODERS:
        shutil.copytree(os.path.join(os.path.dirname(TINY_M3), name), os.path.join(dest, "decoders", name))

    rerankers = os.path.join(dest, "rerankers")
    for name in TINY_RERANKERS:
        shutil.copytree(os.path.join(os.path.dirname(TINY_M3), name), os.path.join(rerankers, name))
    shutil.copytree(TINY_M3, os.path.join(rerankers, "tiny-bge-m3"))
    linked_copy(src, os.path.join(rerankers, "all-MiniLM-L6-v2"))

    for root, dirs, files in os.walk(dest):
        os.chmod(root, 0o755)
    print(f"make_test_models: test models in {dest}")


if __name__ == "__main__":
    main()
