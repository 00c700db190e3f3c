#!/usr/bin/env python3
"""pg_bge's CUDA engine against PyTorch fp16 sentence-transformers (SDPA attention), same GPU,
same run, same token ids.

    cargo build --release -p bge-engine --example cuda_bench          # where Rust is
    python3 benches/cuda_bench.py --engine target/release/examples/cuda_bench

Models: random-weight BERT encoders shaped like bge-small (12 layers, hidden 384, 12 heads,
FFN 1536) and bge-base (12 layers, 768, 12 heads, 3072), vocab 30522, max 512 positions, mean
pooling + normalisation, written as ordinary sentence-transformers directories (fp16
safetensors, a WordPiece tokenizer over a made-up vocabulary). Speed does not depend on the
weights' values; no download is needed.

Workload: for every batch size (1, 32, 256) and length (32, 128, 512), a batch of that many
sequences of exactly that many tokens ([CLS] ... [SEP], random ids). Both sides get the same
ids, already tokenised: tokenisation is CPU work common to both and is left out. Timed on both
sides: ids to the GPU, encoder, pooling, normalisation, vectors back to the host. pg_bge runs
the batch as `bge_embed(text[])` would, in passes of at most --max-batch-tokens tokens;
PyTorch runs it as one forward pass (its best case: no padding, uniform lengths).

Reported per case: median seconds of --reps runs after --warmup, tokens/s and sentences/s of
each side, the ratio pg_bge / PyTorch (above 1: pg_bge is faster), GPU memory (PyTorch: peak
allocated; pg_bge: in use after the runs beyond its CUDA context), and the cosine between the
two sides' vectors for the first row (both fp16, expect >= 0.999; a low value means a bug).

--model-dir adds a real model (all-MiniLM-L6-v2, say) on the committed corpus: the passages
tokenised by its tokenizer and truncated at its max_seq_length, as one batch of varied lengths
(`len` in the table is the longest); PyTorch runs it as SentenceTransformer.encode does, sorted
by length in padded batches of 256.

--tiny adds a 2-layer, hidden-64 model and runs without PyTorch when it is missing, to check
the plumbing on a machine without a GPU (`--device cpu` for the engine).
"""
import argparse
import json
import math
import os
import random
import statistics
import struct
import subprocess
import sys
import time

SHAPES = {
    # name: (layers, hidden, heads, intermediate)
    "bge-small-shaped": (12, 384, 12, 1536),
    "bge-base-shaped": (12, 768, 12, 3072),
}
TINY = {"tiny": (2, 64, 2, 128)}
VOCAB = 30522
MAX_POSITIONS = 512
CLS, SEP = 101, 102


# ---------------------------------------------------------------------------------------------
# Random-weight sentence-transformers directories.

def tensor_shapes(layers, hidden, intermediate):
    shapes = {
        "embeddings.word_embeddings.weight": [VOCAB, hidden],
        "embeddings.position_embeddings.weight": [MAX_POSITIONS, hidden],
        "embeddings.token_type_embeddings.weight": [2, hidden],
        "embeddings.LayerNorm.weight": [hidden],
        "embeddings.LayerNorm.bias": [hidden],
    }
    for l in range(layers):
        p = f"encoder.layer.{l}"
        for part in ("query", "key", "value"):
            shapes[f"{p}.attention.self.{part}.weight"] = [hidden, hidden]
            shapes[f"{p}.attention.self.{part}.bias"] = [hidden]
        shapes[f"{p}.attention.output.dense.weight"] = [hidden, hidden]
        shapes[f"{p}.attention.output.dense.bias"] = [hidden]
        shapes[f"{p}.attention.output.LayerNorm.weight"] = [hidden]
        shapes[f"{p}.attention.output.LayerNorm.bias"] = [hidden]
        shapes[f"{p}.intermediate.dense.weight"] = [intermediate, hidden]
        shapes[f"{p}.intermediate.dense.bias"] = [intermediate]
        shapes[f"{p}.output.dense.weight"] = [hidden, intermediate]
        shapes[f"{p}.output.dense.bias"] = [hidden]
        shapes[f"{p}.output.LayerNorm.weight"] = [hidden]
        shapes[f"{p}.output.LayerNorm.bias"] = [hidden]
    return shapes


def random_values(name, n, rng, np=None):
    """BERT's initialisation: N(0, 0.02) matrices and embeddings, LayerNorm 1 / 0, bias 0.02-ish
    (non-zero, so a bias the engine forgot would show in the cross-check)."""
    if name.endswith("LayerNorm.weight"):
        return np.ones(n, dtype=np.float16) if np is not None else [1.0] * n
    if name.endswith("LayerNorm.bias"):
        return np.zeros(n, dtype=np.float16) if np is not None else [0.0] * n
    std = 0.02
    if np is not None:
        return (np.random.default_rng(rng.getrandbits(32)).standard_normal(n) * std).astype(np.float16)
    return [rng.gauss(0.0, std) for _ in range(n)]


def write_safetensors(path, shapes, rng):
    """fp16 safetensors, with numpy when present, else the standard library (slow; --tiny)."""
    try:
        import numpy as np
    except ImportError:
        np = None
    header, offset, blobs = {}, 0, []
    for name, shape in shapes.items():
        n = math.prod(shape)
        values = random_values(name, n, rng, np)
        blob = values.tobytes() if np is not None else struct.pack(f"<{n}e", *values)
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def vocabulary():
    words = [f"w{i}" for i in range(VOCAB)]
    for i, special in ((0, "[PAD]"), (100, "[UNK]"), (CLS, "[CLS]"), (SEP, "[SEP]"), (103, "[MASK]")):
        words[i] = special
    return words


def tokenizer_json(words):
    special = [
        {"id": i, "special": True, "content": w, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
        for i, w in enumerate(words) if w.startswith("[")
    ]
    cls_sep = {"[CLS]": {"id": "[CLS]", "ids": [CLS], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [SEP], "tokens": ["[SEP]"]}}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": special,
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}},
            ],
            "special_tokens": cls_sep,
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                  "vocab": {w: i for i, w in enumerate(words)}},
    }


def make_model(directory, layers, hidden, heads, intermediate, seed):
    if os.path.exists(os.path.join(directory, "model.safetensors")):
        return
    os.makedirs(os.path.join(directory, "1_Pooling"), exist_ok=True)
    rng = random.Random(seed)
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": VOCAB, "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": intermediate,
        "hidden_act": "gelu", "max_position_embeddings": MAX_POSITIONS, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "position_embedding_type": "absolute", "pad_token_id": 0, "torch_dtype": "float16",
    }
    files = {
        "config.json": config,
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        "sentence_bert_config.json": {"max_seq_length": MAX_POSITIONS, "do_lower_case": False},
        "1_Pooling/config.json": {"word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
                                  "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False},
        "tokenizer_config.json": {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": MAX_POSITIONS,
                                  "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"},
        "special_tokens_map.json": {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"},
    }
    words = vocabulary()
    files["tokenizer.json"] = tokenizer_json(words)
    for name, content in files.items():
        with open(os.path.join(directory, name), "w") as f:
            json.dump(content, f)
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(words) + "\n")
    write_safetensors(os.path.join(directory, "model.safetensors.partial"), tensor_shapes(layers, hidden, intermediate), rng)
    os.replace(os.path.join(directory, "model.safetensors.partial"), os.path.join(directory, "model.safetensors"))


def make_batches(batch_sizes, lengths, seed):
    rng = random.Random(seed)
    out = []
    for length in lengths:
        for b in batch_sizes:
            ids = [[CLS] + [rng.randrange(1000, VOCAB) for _ in range(length - 2)] + [SEP] for _ in range(b)]
            out.append({"batch": b, "len": length, "ids": ids})
    return out


# ---------------------------------------------------------------------------------------------
# The two sides.

def cuda_library_dirs():
    """Where PyTorch's pip packages keep the CUDA libraries (libnvrtc, libcublas), so the engine
    finds the same ones without a system-wide CUDA install."""
    dirs = []
    for p in sys.path:
        root = os.path.join(p, "nvidia")
        if os.path.isdir(root):
            for sub in sorted(os.listdir(root)):
                lib = os.path.join(root, sub, "lib")
                if os.path.isdir(lib):
                    dirs.append(lib)
    for d in ("/usr/local/cuda/lib64",):
        if os.path.isdir(d):
            dirs.append(d)
    return dirs


def run_engine(engine, model_dir, batches_path, device, warmup, reps, max_batch_tokens):
    env = dict(os.environ)
    extra = cuda_library_dirs()
    env["BGE_CUDA_LIB_DIR"] = os.pathsep.join(extra + [env["BGE_CUDA_LIB_DIR"]] if env.get("BGE_CUDA_LIB_DIR") else extra)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(extra + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
    cmd = [engine, "--model", model_dir, "--batches", batches_path, "--device", device,
           "--warmup", str(warmup), "--reps", str(reps), "--max-batch-tokens", str(max_batch_tokens)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"engine failed ({proc.returncode}): {' '.join(cmd)}")
    return {(r["batch"], r["len"]): r for r in map(json.loads, proc.stdout.splitlines())}


def corpus_batch(model_dir, corpus, copies):
    """The corpus (one passage per line) tokenised with the model's own tokenizer.json and
    truncated at its max_seq_length, repeated `copies` times: one batch of varied lengths."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(model_dir, "sentence_bert_config.json")) as f:
        max_len = json.load(f)["max_seq_length"]
    tok.enable_truncation(max_len)
    tok.no_padding()
    with open(corpus) as f:
        texts = [line.rstrip("\n") for line in f if line.strip()]
    ids = [e.ids for e in tok.encode_batch(texts)] * copies
    return {"batch": len(ids), "len": max(map(len, ids)), "ids": ids}


def run_torch(model_dir, batches, warmup, reps, torch_batch=256):
    import torch
    from sentence_transformers import SentenceTransformer

    kwargs = {"torch_dtype": torch.float16, "attn_implementation": "sdpa"}
    try:
        st = SentenceTransformer(model_dir, device="cuda", model_kwargs=kwargs)
    except TypeError:  # older sentence-transformers: no model_kwargs
        st = SentenceTransformer(model_dir, device="cuda").half()
    st.eval()
    impl = getattr(st[0].auto_model.config, "_attn_implementation", "?")
    print(f"PyTorch {torch.__version__}, sentence-transformers, attention: {impl}, {torch.cuda.get_device_name()}", file=sys.stderr)
    results = {}
    for b in batches:
        uniform = len(set(map(len, b["ids"]))) == 1
        if uniform:
            ids_cpu = torch.tensor(b["ids"], dtype=torch.long).pin_memory()

            def once():
                ids = ids_cpu.to("cuda", non_blocking=True)
                feats = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
                out = st.forward(feats)["sentence_embedding"].float().cpu()
                torch.cuda.synchronize()
                return out
        else:
            # Varied lengths: as SentenceTransformer.encode does, sorted by length and run in
            # batches of torch_batch, each padded to its longest; rows back in input order.
            order = sorted(range(len(b["ids"])), key=lambda i: -len(b["ids"][i]))
            chunks = []
            for c in range(0, len(order), torch_batch):
                rows = [b["ids"][i] for i in order[c:c + torch_batch]]
                width = max(map(len, rows))
                ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long).pin_memory()
                mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long).pin_memory()
                chunks.append((ids, mask))
            inverse = torch.empty(len(order), dtype=torch.long)
            inverse[torch.tensor(order)] = torch.arange(len(order))

            def once():
                outs = []
                for ids_cpu, mask_cpu in chunks:
                    ids = ids_cpu.to("cuda", non_blocking=True)
                    feats = {"input_ids": ids, "attention_mask": mask_cpu.to("cuda", non_blocking=True), "token_type_ids": torch.zeros_like(ids)}
                    outs.append(st.forward(feats)["sentence_embedding"])
                out = torch.cat(outs)[inverse.to("cuda")].float().cpu()
                torch.cuda.synchronize()
                return out

        with torch.inference_mode():
            torch.cuda.reset_peak_memory_stats()
            for _ in range(warmup):
                out = once()
            seconds = []
            for _ in range(reps):
                torch.cuda.synchronize()
                t = time.perf_counter()
                out = once()
                seconds.append(time.perf_counter() - t)
        results[(b["batch"], b["len"])] = {
            "seconds": seconds,
            "peak_bytes": torch.cuda.max_memory_allocated(),
            "embedding0": out[0].tolist(),
        }
    del st
    torch.cuda.empty_cache()
    return results


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True, help="the cuda_bench binary (cargo build --release -p bge-engine --example cuda_bench)")
    ap.add_argument("--work", default="/tmp/pg_bge_cuda_bench", help="where the random models and batches go")
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {', '.join(SHAPES)}, tiny")
    ap.add_argument("--batch-sizes", default="1,32,256")
    ap.add_argument("--lengths", default="32,128,512")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--max-batch-tokens", type=int, default=16384, help="tokens per forward pass, as bge.max_batch_tokens sets them (pg_bge's default is 4096)")
    ap.add_argument("--device", default="cuda", help="engine device: cuda, or cpu to check the plumbing")
    ap.add_argument("--no-torch", action="store_true", help="time the engine only")
    ap.add_argument("--json", help="also write every number to this file")
    ap.add_argument("--model-dir", help="also time this real sentence-transformers model (an fp16 copy is fine) on --corpus")
    ap.add_argument("--corpus", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus.txt"),
                    help="one passage per line, for --model-dir (default: the committed benches/corpus.txt)")
    ap.add_argument("--corpus-copies", type=int, default=4, help="the corpus repeated this many times as one batch")
    args = ap.parse_args()

    shapes = {**SHAPES, **TINY}
    batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    lengths = [int(x) for x in args.lengths.split(",")]
    os.makedirs(args.work, exist_ok=True)
    batches = make_batches(batch_sizes, lengths, seed=7)
    batches_path = os.path.join(args.work, "batches.json")
    with open(batches_path, "w") as f:
        json.dump(batches, f)

    use_torch = not args.no_torch
    if use_torch:
        try:
            import torch  # noqa: F401
            import sentence_transformers  # noqa: F401
        except ImportError as e:
            print(f"PyTorch side skipped: {e}", file=sys.stderr)
            use_torch = False

    report = []
    header = f"{'model':<17} {'batch':>5} {'len':>4} {'pg_bge ms':>10} {'torch ms':>9} {'pg_bge tok/s':>13} {'torch tok/s':>12} {'ratio':>6} {'pg_bge MiB':>10} {'torch MiB':>9} {'cos':>7}"
    lines = [header, "-" * len(header)]
    runs = []  # (label, model directory, batches, their json file)
    if args.model_dir:
        corpus = corpus_batch(args.model_dir, args.corpus, args.corpus_copies)
        corpus_path = os.path.join(args.work, "corpus_batches.json")
        with open(corpus_path, "w") as f:
            json.dump([corpus], f)
        runs.append((os.path.basename(os.path.normpath(args.model_dir))[:17], args.model_dir, [corpus], corpus_path))
    for shape in filter(None, args.shapes.split(",")):
        layers, hidden, heads, inter = shapes[shape]
        model_dir = os.path.join(args.work, shape)
        t = time.perf_counter()
        make_model(model_dir, layers, hidden, heads, inter, seed=sum(map(ord, shape)))
        print(f"{shape}: model ready in {time.perf_counter() - t:.1f}s ({model_dir})", file=sys.stderr)
        runs.append((shape, model_dir, batches, batches_path))
    for shape, model_dir, batches, batches_path in runs:
        ours = run_engine(args.engine, model_dir, batches_path, args.device, args.warmup, args.reps, args.max_batch_tokens)
        theirs = run_torch(model_dir, batches, args.warmup, args.reps) if use_torch else {}
        for b in batches:
            key = (b["batch"], b["len"])
            tokens = sum(map(len, b["ids"]))
            o = ours[key]
            o_s = statistics.median(o["seconds"])
            row = {"model": shape, "batch": key[0], "len": key[1], "tokens": tokens, "pg_bge_seconds": o_s,
                   "pg_bge_tokens_per_s": tokens / o_s, "pg_bge_sentences_per_s": key[0] / o_s,
                   "pg_bge_gpu_bytes": o.get("gpu_used_bytes"), "pg_bge_load_seconds": o.get("load_seconds")}
            t_ms = t_tps = ratio = t_mib = cos = None
            if key in theirs:
                th = theirs[key]
                t_s = statistics.median(th["seconds"])
                cos = cosine(o["embedding0"], th["embedding0"])
                row.update({"torch_seconds": t_s, "torch_tokens_per_s": tokens / t_s, "torch_sentences_per_s": key[0] / t_s,
                            "ratio": t_s / o_s, "torch_peak_bytes": th["peak_bytes"], "cosine_first_row": cos})
                t_ms, t_tps, ratio, t_mib = t_s * 1e3, tokens / t_s, t_s / o_s, th["peak_bytes"] / 2**20
            report.append(row)
            def fmt(v, spec):
                return format(v, spec) if v is not None else format("-", spec.split(".")[0].rstrip(","))
            o_mib = o["gpu_used_bytes"] / 2**20 if o.get("gpu_used_bytes") is not None else None
            lines.append(f"{shape:<17} {key[0]:>5} {key[1]:>4} {o_s * 1e3:>10.2f} {fmt(t_ms, '>9.2f')} {tokens / o_s:>13,.0f} "
                         f"{fmt(t_tps, '>12,.0f')} {fmt(ratio, '>6.2f')} {fmt(o_mib, '>10.0f')} {fmt(t_mib, '>9.0f')} {fmt(cos, '>7.4f')}")
    print("\n".join(lines))
    print("ratio = PyTorch time / pg_bge time (above 1: pg_bge is faster); medians of "
          f"{args.reps} runs after {args.warmup} warm-ups; batch 1 rows are latencies.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
