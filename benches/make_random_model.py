"""A random-weight BERT model of a chosen shape, for memory and speed benchmarks only.

    python3 benches/make_random_model.py SRC_MODEL_DIR DEST_DIR [LAYERS HIDDEN HEADS INTERMEDIATE]

Copies SRC_MODEL_DIR's tokenizer and sentence-transformers files (a BERT model such as
all-MiniLM-L6-v2), writes a config.json of the new shape (default: bge-large's, 24 layers of
1024 with 16 heads and 4096 intermediate) and a model.safetensors of random f32 weights
(Gaussian, std 0.02, LayerNorm gamma 1 and beta 0). Pure Python: a block of random numbers is
reused across tensors, which is all a benchmark of memory and speed needs.
"""
import array
import json
import os
import random
import shutil
import struct
import sys


def main():
    src, dest = sys.argv[1], sys.argv[2]
    layers, hidden, heads, inter = (int(x) for x in (sys.argv[3:7] or (24, 1024, 16, 4096)))
    config = json.load(open(os.path.join(src, "config.json")))
    vocab, positions, types = config["vocab_size"], config["max_position_embeddings"], config["type_vocab_size"]
    os.makedirs(os.path.join(dest, "1_Pooling"), exist_ok=True)
    for name in os.listdir(src):
        path = os.path.join(src, name)
        if os.path.isfile(path) and name not in ("model.safetensors", "config.json", "README.md"):
            shutil.copy(path, os.path.join(dest, name))
    pooling = json.load(open(os.path.join(src, "1_Pooling", "config.json")))
    pooling["word_embedding_dimension"] = hidden
    json.dump(pooling, open(os.path.join(dest, "1_Pooling", "config.json"), "w"), indent=2)
    config.update(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inter)
    json.dump(config, open(os.path.join(dest, "config.json"), "w"), indent=2)

    tensors = [
        ("embeddings.word_embeddings.weight", [vocab, hidden], "random"),
        ("embeddings.position_embeddings.weight", [positions, hidden], "random"),
        ("embeddings.token_type_embeddings.weight", [types, hidden], "random"),
        ("embeddings.LayerNorm.weight", [hidden], "ones"),
        ("embeddings.LayerNorm.bias", [hidden], "zeros"),
    ]
    for l in range(layers):
        p = f"encoder.layer.{l}."
        for lin, shape in [
            ("attention.self.query", [hidden, hidden]),
            ("attention.self.key", [hidden, hidden]),
            ("attention.self.value", [hidden, hidden]),
            ("attention.output.dense", [hidden, hidden]),
            ("intermediate.dense", [inter, hidden]),
            ("output.dense", [hidden, inter]),
        ]:
            tensors.append((p + lin + ".weight", shape, "random"))
            tensors.append((p + lin + ".bias", [shape[0]], "zeros"))
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            tensors.append((p + ln + ".weight", [hidden], "ones"))
            tensors.append((p + ln + ".bias", [hidden], "zeros"))

    header, offset = {}, 0
    for name, shape, _ in tensors:
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)

    rng = random.Random(0)
    block = array.array("f", (rng.gauss(0.0, 0.02) for _ in range(1 << 20))).tobytes()
    with open(os.path.join(dest, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for i, (name, shape, fill) in enumerate(tensors):
            size = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            if fill == "random":
                start = (i * 4096 * 4) % len(block)
                rotated = block[start:] + block[:start]
                while size > 0:
                    chunk = rotated[: min(size, len(rotated))]
                    f.write(chunk)
                    size -= len(chunk)
            else:
                value = 1.0 if fill == "ones" else 0.0
                f.write(array.array("f", [value]).tobytes() * (size // 4))
    print(f"{dest}: {layers} layers x {hidden} hidden, {offset / 1e9:.2f} GB of f32 weights")


if __name__ == "__main__":
    main()
