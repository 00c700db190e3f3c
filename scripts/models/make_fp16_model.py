#!/usr/bin/env python3
"""Copies a sentence-transformers model directory with its model.safetensors narrowed from F32
to F16 (standard library only), halving it: all-MiniLM-L6-v2 becomes 45 MB, small enough to
carry to a GPU machine for `cargo test -p bge-engine --test cuda` (docs/cuda.md).

    scripts/models/make_fp16_model.py SOURCE_MODEL_DIR DEST_MODEL_DIR

The GPU backend computes in f16 anyway; the CPU side of the test then reads the same f16
weights (widened), so GPU-vs-CPU comparisons are unaffected. Goldens computed from the F32
weights move by the weights' rounding (cosine still about 0.9999x).
"""
import json
import os
import shutil
import struct
import sys

CHUNK = 1 << 20  # floats per conversion step, to bound memory


def narrow(src, dest):
    with open(src, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data_start = 8 + header_len
        meta = header.pop("__metadata__", None)
        out_header, offset, plan = {}, 0, []
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            begin, end = info["data_offsets"]
            size = end - begin
            if info["dtype"] == "F32":
                new_size, dtype = size // 2, "F16"
            else:
                new_size, dtype = size, info["dtype"]
            out_header[name] = {"dtype": dtype, "shape": info["shape"], "data_offsets": [offset, offset + new_size]}
            plan.append((begin, size, info["dtype"] == "F32"))
            offset += new_size
        if meta is not None:
            out_header["__metadata__"] = meta
        head = json.dumps(out_header, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        with open(dest, "wb") as out:
            out.write(struct.pack("<Q", len(head)))
            out.write(head)
            for begin, size, is_f32 in plan:
                f.seek(data_start + begin)
                left = size
                while left:
                    n = min(left, CHUNK * 4)
                    raw = f.read(n)
                    if is_f32:
                        count = n // 4
                        out.write(struct.pack(f"<{count}e", *struct.unpack(f"<{count}f", raw)))
                    else:
                        out.write(raw)
                    left -= n


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dest = sys.argv[1:]
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model.safetensors", "*.bin", "*.onnx", "onnx", "openvino", "*.h5", "*.msgpack"))
    narrow(os.path.join(src, "model.safetensors"), os.path.join(dest, "model.safetensors"))


if __name__ == "__main__":
    main()
