#!/usr/bin/env python3
"""pg_bge's engine against the runtimes users would otherwise pick, in one run on one machine:
onnxruntime fp32 and PyTorch sentence-transformers, on the same mixed-length corpus and the
same model directory, with the same thread count, and the batch-1 latency of a short query on
1 and 2 threads (pg_bge: tokenise, forward, pool; onnxruntime: session.run alone). pg_bge runs
with bge.precision fp32, bf16 (AVX512-BF16 CPUs only) and int8. Prints tokens/s, texts/s,
latencies and the ratios.

Needs: python3 -m pip install onnxruntime tokenizers (plus sentence-transformers for the
PyTorch column, which is skipped without it) and a release build of the engine's example:
cargo build --release -p bge-engine --example throughput

    python3 benches/compare_peers.py models/all-MiniLM-L6-v2 benches/corpus.txt [--threads 2] [--repeats 3]
        [--onnx model.onnx] [--latency-threads 1,2] [--query "..."] [--skip-throughput] [--precisions fp32]
        [--engine PATH]

--onnx takes an encoder exported by benches/export_onnx.py (from any environment with torch);
without it the encoder is exported here, which needs PyTorch.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def load_tokenizer(model_dir, max_len):
    """The model's tokenizer.json, truncating at max_len, padding to the longest in a batch."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.enable_truncation(max_len)
    tok.enable_padding()
    return tok


def ort_inputs(tok, texts):
    import numpy as np

    enc = tok.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


def ort_session(onnx_path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])


def median_time(fn, runs, warmup=1):
    """Median seconds of `runs` calls of fn after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
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
    ap.add_argument("--onnx", help="encoder exported by benches/export_onnx.py (else exported here with PyTorch)")
    ap.add_argument("--latency-threads", default="1,2")
    ap.add_argument("--query", default="what is the capital city of france?")
    ap.add_argument("--rounds", type=int, default=3, help="latency rounds, every runtime once per round, interleaved; medians reported")
    ap.add_argument("--skip-throughput", action="store_true", help="latency only (and no check against sentence-transformers)")
    ap.add_argument("--precisions", default="fp32,bf16,int8", help="pg_bge precisions to run (comma-separated)")
    ap.add_argument("--engine", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "examples", "throughput"),
                    help="the engine's throughput example (another build, to compare two)")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import json

    import numpy as np

    texts = [line.rstrip("\n") for line in open(args.corpus)]
    max_len = json.load(open(os.path.join(args.model, "sentence_bert_config.json")))["max_seq_length"]
    mean_pool = json.load(open(os.path.join(args.model, "1_Pooling", "config.json")))["pooling_mode_mean_tokens"]
    tok = load_tokenizer(args.model, max_len)
    n_tokens = sum(sum(e.attention_mask) for e in tok.encode_batch(texts))
    results, latencies = {}, {}

    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        torch = None
    reference = None
    tmp = tempfile.TemporaryDirectory()
    onnx_path = args.onnx
    if torch is not None:
        torch.set_num_threads(args.threads)
        st = SentenceTransformer(args.model, device="cpu")
        # PyTorch through sentence-transformers (it sorts by length and pads per batch).
        if not args.skip_throughput:
            results["pytorch"] = median_time(lambda: st.encode(texts, batch_size=args.batch), args.repeats)
        if not args.skip_throughput:
            reference = st.encode(texts, batch_size=args.batch, normalize_embeddings=True)
        if onnx_path is None:
            onnx_path = os.path.join(tmp.name, "model.onnx")
            subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "export_onnx.py"), args.model, onnx_path], check=True)
    else:
        print("pytorch: not run (no torch/sentence-transformers in this Python)")
    if onnx_path is None:
        sys.exit("no ONNX model: pass --onnx (benches/export_onnx.py) or install torch and sentence-transformers")

    # onnxruntime fp32 on the same encoder; pooling and normalisation as the model directory
    # says (mean + normalise for all-MiniLM-L6-v2), batches sorted by length.
    sess = ort_session(onnx_path, args.threads)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))

    def run_ort():
        out = [None] * len(texts)
        for s in range(0, len(order), args.batch):
            idx = order[s:s + args.batch]
            feeds = ort_inputs(tok, [texts[i] for i in idx])
            h = sess.run(None, feeds)[0]
            m = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (h * m).sum(1) / m.sum(1) if mean_pool else h[:, 0]
            pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
            for j, i in enumerate(idx):
                out[i] = pooled[j]
        return np.stack(out)

    if reference is not None:
        print(f"onnxruntime min cosine to sentence-transformers: {float((run_ort() * reference).sum(1).min()):.6f}")
    query_feeds = ort_inputs(tok, [args.query])
    query_tokens = int(query_feeds["attention_mask"].sum())
    lat_threads = [int(t) for t in args.latency_threads.split(",")]
    ort_by_threads = {t: ort_session(onnx_path, t) for t in lat_threads}

    # pg_bge's engine (batched by length under max_batch_tokens, the array form's path; and one
    # text per call), then its batch-1 latency per thread count (REPEATS = 0: latency only).
    exe = args.engine
    precisions = [(p, "" if p == "fp32" else f" {p}") for p in args.precisions.split(",")]

    def engine(precision, threads, repeats):
        env = dict(os.environ, BGE_PRECISION=precision, BGE_QUERY=args.query)
        return subprocess.run([exe, args.model, args.corpus, str(threads), str(repeats)], capture_output=True, text=True, env=env)

    runs_ok = []
    for precision, suffix in precisions:
        run = engine(precision, args.threads, 0)
        if run.returncode != 0:
            print(f"pg_bge {precision}: not run ({run.stderr.strip().splitlines()[-1:]})")
            continue
        runs_ok.append((precision, suffix))
    # Throughput in rounds, every runtime once per round (the same reason as the latency
    # rounds below); medians over rounds.
    if not args.skip_throughput:
        run_ort()
        rounds = {}
        for _ in range(args.repeats):
            t = time.perf_counter()
            run_ort()
            rounds.setdefault("onnxruntime", []).append(time.perf_counter() - t)
            for precision, suffix in runs_ok:
                run = engine(precision, args.threads, 1)
                print(run.stdout.strip())
                for line in run.stdout.splitlines():
                    if line.startswith("batched:"):
                        rounds.setdefault("pg_bge" + suffix, []).append(float(line.split()[1]))
                    if line.startswith("single:"):
                        rounds.setdefault("pg_bge one at a time" + suffix, []).append(float(line.split()[1]))
        results.update({name: statistics.median(v) for name, v in rounds.items()})
    # Latency in rounds, every runtime once per round, so load that comes and goes on the
    # machine affects them alike; medians over rounds.
    samples = {}
    for _ in range(args.rounds):
        for t in lat_threads:
            s1 = ort_by_threads[t]
            samples.setdefault(("onnxruntime", t), []).append(median_time(lambda: s1.run(None, query_feeds), 300, warmup=20))
        for precision, suffix in runs_ok:
            for t in lat_threads:
                run = engine(precision, t, 0)
                for line in run.stdout.splitlines():
                    if line.startswith("latency:"):
                        samples.setdefault(("pg_bge" + suffix, t), []).append(float(line.split()[1]) / 1e3)
    latencies = {k: statistics.median(v) for k, v in samples.items()}

    print(f"\ncorpus: {len(texts)} texts, {n_tokens} tokens after truncation at {max_len}; {args.threads} threads; median of {args.repeats} interleaved rounds")
    print(f"{'runtime':28} {'seconds':>8} {'tokens/s':>10} {'texts/s':>8} {'x onnxruntime':>14}")
    for name, secs in (results.items() if results else []):
        print(f"{name:28} {secs:8.3f} {n_tokens / secs:10.0f} {len(texts) / secs:8.1f} {results['onnxruntime'] / secs:13.2f}x")
    print(f"\nbatch-1 latency of a {query_tokens}-token query (median of 300 calls, then of {args.rounds} interleaved rounds; pg_bge includes tokenising and pooling)")
    print(f"{'runtime':28} " + " ".join(f"{f'{t} thr ms':>10} {'x ort':>6}" for t in lat_threads))
    for name in dict.fromkeys(n for n, _ in latencies):
        cells = []
        for t in lat_threads:
            v = latencies.get((name, t))
            cells.append(f"{v * 1e3:10.3f} {latencies[('onnxruntime', t)] / v:5.2f}x" if v else f"{'-':>10} {'':>6}")
        print(f"{name:28} " + " ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
