#!/usr/bin/env python3
"""pg_bge's engine against the runtimes users would otherwise pick, in one run on one machine:
onnxruntime fp32 and PyTorch sentence-transformers, on the same mixed-length corpus and the
same model directory, with the same thread count. Prints tokens/s, texts/s and the ratios.

Needs: python3 -m pip install sentence-transformers onnxruntime onnx onnxscript
and a release build of the engine's example:  cargo build --release -p bge-engine --example throughput

    python3 benches/compare_peers.py models/all-MiniLM-L6-v2 benches/corpus.txt [--threads 2] [--repeats 3]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("corpus")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import numpy as np
    import onnxruntime as ort
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    texts = [line.rstrip("\n") for line in open(args.corpus)]
    st = SentenceTransformer(args.model, device="cpu")
    max_len = st.max_seq_length
    tok = st.tokenizer
    n_tokens = sum(min(len(ids), max_len) for ids in tok(texts, add_special_tokens=True)["input_ids"])
    results = {}

    # PyTorch through sentence-transformers (it sorts by length and pads per batch).
    results["pytorch"] = timed(lambda: st.encode(texts, batch_size=args.batch), args.repeats)
    reference = st.encode(texts, batch_size=args.batch, normalize_embeddings=True)

    # onnxruntime fp32 on the same encoder, exported here; pooling and normalisation as the
    # model directory says (mean + normalise for all-MiniLM-L6-v2), batches sorted by length.
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = os.path.join(tmp, "model.onnx")
        bert = st[0].auto_model.eval()

        class Encoder(torch.nn.Module):
            def __init__(self, bert):
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

        dummy = tok(["hello world"] * 2, return_tensors="pt", padding=True)
        names = ["input_ids", "attention_mask", "token_type_ids"]
        with torch.no_grad():
            torch.onnx.export(
                Encoder(bert), tuple(dummy[n] for n in names), onnx_path,
                input_names=names, output_names=["last_hidden_state"],
                dynamic_axes={n: {0: "batch", 1: "seq"} for n in names + ["last_hidden_state"]},
                opset_version=17, dynamo=False,
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        import json
        mean_pool = json.load(open(os.path.join(args.model, "1_Pooling", "config.json")))["pooling_mode_mean_tokens"]

        def run_ort():
            out = [None] * len(texts)
            for s in range(0, len(order), args.batch):
                idx = order[s:s + args.batch]
                enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len, return_tensors="np")
                h = sess.run(None, {k: enc[k].astype(np.int64) for k in ["input_ids", "attention_mask", "token_type_ids"]})[0]
                m = enc["attention_mask"][..., None].astype(np.float32)
                pooled = (h * m).sum(1) / m.sum(1) if mean_pool else h[:, 0]
                pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
                for j, i in enumerate(idx):
                    out[i] = pooled[j]
            return np.stack(out)

        results["onnxruntime"] = timed(run_ort, args.repeats)
        ort_cos = float((run_ort() * reference).sum(1).min())

    # pg_bge's engine (batched by length under max_batch_tokens, the array form's path).
    exe = os.path.join(os.path.dirname(__file__), "..", "target", "release", "examples", "throughput")
    # fp32 (bge.precision = fp32, the default) and bf16 (bge.precision = bf16, AVX512-BF16 CPUs).
    for precision, suffix in (("fp32", ""), ("bf16", " bf16")):
        env = dict(os.environ, BGE_PRECISION=precision)
        run = subprocess.run([exe, args.model, args.corpus, str(args.threads), str(args.repeats)], capture_output=True, text=True, env=env)
        if run.returncode != 0:
            print(f"pg_bge {precision}: not run ({run.stderr.strip().splitlines()[-1:]})")
            continue
        print(run.stdout.strip())
        for line in run.stdout.splitlines():
            if line.startswith("batched:"):
                results["pg_bge" + suffix] = float(line.split()[1])
            if line.startswith("single:"):
                results["pg_bge one at a time" + suffix] = float(line.split()[1])

    print(f"\ncorpus: {len(texts)} texts, {n_tokens} tokens after truncation at {max_len}; {args.threads} threads; median of {args.repeats}")
    print(f"onnxruntime min cosine to sentence-transformers: {ort_cos:.6f}")
    print(f"{'runtime':28} {'seconds':>8} {'tokens/s':>10} {'texts/s':>8} {'x onnxruntime':>14}")
    for name, secs in results.items():
        print(f"{name:28} {secs:8.3f} {n_tokens / secs:10.0f} {len(texts) / secs:8.1f} {results['onnxruntime'] / secs:13.2f}x")


if __name__ == "__main__":
    sys.exit(main())
