#!/usr/bin/env python3
"""CPU tokens/s of a ~1B-parameter random-weight Gemma2 embedder: pg_bge's engine (fp32 and
bf16) against PyTorch (transformers' Gemma2Model, eager attention, fp32; the only attention
transformers runs Gemma2 with, since SDPA drops the soft-cap), in one run, same threads, same
texts, same max_seq_length.

Shape (Gemma-2-2B's layer layout, narrower): hidden 2048, 18 layers, 8 query heads, 4 kv heads,
head_dim 256, intermediate 8192, query_pre_attn_scalar 256, attention soft-cap 50, sliding window
4096 on even layers: 1.13B parameters in the layers, 4.5 GB in f32. The vocabulary is the tiny
test tokenizer's (engine/tests/models/tiny-gemma2): it changes no per-token cost but the
embedding gather.

Needs: python3 -m pip install torch transformers safetensors tokenizers, and a release build of
the engine's example:  cargo build --release -p bge-engine --example throughput

    python3 benches/gemma2_bench.py [--threads 2] [--repeats 3] [--texts 24] [--dir target/gemma2-bench]

The model directory is written once (about 4.5 GB) and reused. Peak memory: PyTorch's copy, then
the engine's (run one after the other).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from compare_peers import median_time  # noqa: E402
TINY = os.path.join(ROOT, "engine", "tests", "models", "tiny-gemma2")
SHAPE = dict(hidden_size=2048, num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
             intermediate_size=8192, query_pre_attn_scalar=256, attn_logit_softcapping=50.0, sliding_window=4096,
             max_position_embeddings=8192, rms_norm_eps=1e-6)
MAX_SEQ_LENGTH = 512


def make_model(dest):
    import torch
    import transformers as tf

    if os.path.exists(os.path.join(dest, "config.json")):
        return
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(TINY, tmp, ignore=lambda _d, names: [n for n in names if n.startswith("model")])
    vocab = json.load(open(os.path.join(TINY, "config.json")))["vocab_size"]
    cfg = tf.Gemma2Config(vocab_size=vocab, pad_token_id=0, bos_token_id=2, eos_token_id=1, **SHAPE)
    torch.manual_seed(0)
    model = tf.Gemma2Model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Norm weights random too (zero at init), so every (1 + w) differs from 1.
            p.normal_(0.0, 0.3 if "norm" in name else 0.02)
    model.save_pretrained(tmp)
    with open(os.path.join(tmp, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False}, f)
    os.rename(tmp, dest)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--texts", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dir", default=os.path.join(ROOT, "target", "gemma2-bench"))
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch
    import transformers as tf
    from transformers import PreTrainedTokenizerFast

    torch.set_num_threads(args.threads)
    make_model(args.dir)
    corpus = [line.rstrip("\n") for line in open(os.path.join(ROOT, "benches", "corpus.txt")) if line.strip()]
    texts = corpus[: args.texts]
    corpus_path = os.path.join(args.dir, "bench_corpus.txt")
    with open(corpus_path, "w") as f:
        f.write("\n".join(texts) + "\n")
    tok = PreTrainedTokenizerFast.from_pretrained(args.dir)
    ids = tok(texts, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
    n_tokens = sum(len(i) for i in ids)
    params = sum(p.numel() for p in tf.Gemma2Model(tf.Gemma2Config(vocab_size=8, **SHAPE)).layers.parameters())
    print(f"model: random-weight Gemma2, {params / 1e9:.2f}B parameters in its layers; {len(texts)} texts, {n_tokens} tokens "
          f"(max {max(len(i) for i in ids)}), {args.threads} threads, median of {args.repeats}")
    results = {}

    # PyTorch as FlagEmbedding runs it: batches sorted by length, left padding, last token.
    model = tf.Gemma2Model.from_pretrained(args.dir, attn_implementation="eager", dtype=torch.float32).eval()
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))

    def run_torch():
        out = [None] * len(texts)
        with torch.inference_mode():
            for s in range(0, len(order), args.batch):
                idx = order[s:s + args.batch]
                enc = tok([texts[i] for i in idx], truncation=True, max_length=MAX_SEQ_LENGTH, padding=True, return_tensors="pt")
                h = model(**enc).last_hidden_state[:, -1]
                h = torch.nn.functional.normalize(h, dim=-1)
                for j, i in enumerate(idx):
                    out[i] = h[j]
        return torch.stack(out)

    results["pytorch fp32 (eager)"] = median_time(run_torch, args.repeats)
    print(f"pytorch:  {results['pytorch fp32 (eager)']:8.3f} s  {n_tokens / results['pytorch fp32 (eager)']:9.1f} tokens/s", flush=True)
    del model

    exe = os.path.join(ROOT, "target", "release", "examples", "throughput")
    for precision in ("fp32", "bf16"):
        env = dict(os.environ, BGE_PRECISION=precision)
        run = subprocess.run([exe, args.dir, corpus_path, str(args.threads), str(args.repeats)], capture_output=True, text=True, env=env)
        if run.returncode != 0:
            print(f"pg_bge {precision}: not run ({run.stderr.strip().splitlines()[-1:]})")
            continue
        print(run.stdout.strip())
        for line in run.stdout.splitlines():
            if line.startswith("batched:"):
                results[f"pg_bge {precision}"] = float(line.split()[1])
            if line.startswith("single:"):
                results[f"pg_bge {precision} one at a time"] = float(line.split()[1])

    base = results["pytorch fp32 (eager)"]
    print(f"\n{'runtime':30} {'seconds':>8} {'tokens/s':>9} {'x pytorch':>10}")
    for name, secs in results.items():
        print(f"{name:30} {secs:8.2f} {n_tokens / secs:9.1f} {base / secs:9.2f}x")


if __name__ == "__main__":
    sys.exit(main())
