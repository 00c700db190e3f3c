#!/usr/bin/env python3
"""Writes engine/tests/goldens/all-MiniLM-L6-v2.json: sentence-transformers' own embeddings and
token ids for a set of awkward texts, for the model as published (mean pooling, max_seq_length
256) and for a CLS-pooling, max_seq_length-512 variant of the same directory.

Needs: python3 -m pip install sentence-transformers  (it pulls torch and transformers; CPU is
enough). The goldens are committed, so tests and CI never need PyTorch.

    python3 scripts/goldens/make_minilm_goldens.py models/all-MiniLM-L6-v2 engine/tests/goldens/all-MiniLM-L6-v2.json
"""
import json
import sys
import tempfile

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from golden_texts import TEXTS, make_cls512_variant  # noqa: E402


def run(model_dir):
    model = SentenceTransformer(model_dir, device="cpu")
    emb = model.encode(TEXTS, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    ids = [model.tokenize([t])["input_ids"][0].tolist() for t in TEXTS]
    return {
        "max_seq_length": model.max_seq_length,
        "token_ids": ids,
        "embeddings": [[float(f"{x:.9g}") for x in row] for row in emb.tolist()],
    }


def main():
    src, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        variant = make_cls512_variant(src, tmp)
        golden = {
            "generator": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
            "texts": TEXTS,
            "mean256": run(src),
            "cls512": run(variant),
        }
    with open(out, "w") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
    print(f"wrote {out}: {len(TEXTS)} texts")


if __name__ == "__main__":
    main()
