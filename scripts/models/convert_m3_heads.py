#!/usr/bin/env python3
"""Converts BGE-M3's output heads from PyTorch pickles to safetensors, which is all pg_bge reads:

    scripts/models/convert_m3_heads.py MODEL_DIR

MODEL_DIR/sparse_linear.pt  (nn.Linear(hidden, 1) state dict: weight [1, hidden], bias [1])
    -> MODEL_DIR/sparse_linear.safetensors
MODEL_DIR/colbert_linear.pt (nn.Linear(hidden, dim) state dict: weight [dim, hidden], bias [dim])
    -> MODEL_DIR/colbert_linear.safetensors

Tensors keep their names ("weight", "bias") and dtype. A head whose .pt is absent is skipped;
an existing .safetensors is overwritten. Needs: python3 -m pip install torch safetensors
(CPU-only torch is enough). The .pt files are loaded with weights_only=True, so the pickle
cannot run code.
"""
import os
import sys

HEADS = ("sparse_linear", "colbert_linear")


def convert(model_dir):
    import torch
    from safetensors.torch import save_file

    written = []
    for head in HEADS:
        src = os.path.join(model_dir, head + ".pt")
        if not os.path.exists(src):
            continue
        state = torch.load(src, map_location="cpu", weights_only=True)
        if set(state) != {"weight", "bias"}:
            raise SystemExit(f"convert_m3_heads: {src} holds {sorted(state)}, expected weight and bias of an nn.Linear")
        tensors = {name: t.detach().contiguous() for name, t in state.items()}
        dest = os.path.join(model_dir, head + ".safetensors")
        save_file(tensors, dest + ".partial", metadata={"format": "pt", "converted_from": head + ".pt"})
        os.replace(dest + ".partial", dest)
        written.append(f"{head}.safetensors {list(tensors['weight'].shape)}")
    return written


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    written = convert(sys.argv[1])
    if not written:
        raise SystemExit(f"convert_m3_heads: no sparse_linear.pt or colbert_linear.pt in {sys.argv[1]}")
    for w in written:
        print(f"convert_m3_heads: wrote {w}")


if __name__ == "__main__":
    main()
