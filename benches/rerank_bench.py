#!/usr/bin/env python3
"""Reranking the top 100 candidates of a query: pg_bge's bge_rerank (one batched call in SQL)
against PyTorch (FlagEmbedding's FlagReranker, fp32), on the same CPU, in one run, rounds
interleaved; pairs/s of each (best of the rounds) and their ratio.

The reranker: a BertForSequenceClassification made from all-MiniLM-L6-v2's encoder with a random
one-label head (the shape of cross-encoder/ms-marco-MiniLM-L-6-v2), or with --shape base a
random-weight XLMRobertaForSequenceClassification of bge-reranker-base's shape (12 layers, 768
wide) with the tiny test tokenizer. The weights do not change the work; only real models are
worth comparing scores of, which the tests do.

Needs torch, transformers and FlagEmbedding (--no-deps; see scripts/goldens/make_m3_goldens.py)
and pg_bge installed for PostgreSQL 15 (scripts/postgres/install.sh):

    python3 benches/rerank_bench.py [--shape minilm|base] [--rounds 5] [--threads 2]
"""
import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(ROOT, "scripts", "goldens")]


def build_model(shape, dest):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification, XLMRobertaConfig, XLMRobertaForSequenceClassification

    torch.manual_seed(0)
    if shape == "minilm":
        src = subprocess.check_output(["/usr/lib/postgresql/15/bin/pg_config", "--sharedir"], text=True).strip() + "/bge_models/all-MiniLM-L6-v2"
        model = BertForSequenceClassification.from_pretrained(src, num_labels=1)
        tokenizer = AutoTokenizer.from_pretrained(src, model_max_length=512)
    else:
        tokenizer = AutoTokenizer.from_pretrained(os.path.join(ROOT, "engine/tests/models/tiny-bge-m3"), model_max_length=512)
        config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                  intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                  num_labels=1, architectures=["XLMRobertaForSequenceClassification"])
        model = XLMRobertaForSequenceClassification(config)
    model.config.architectures = [type(model).__name__]
    model.eval().save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def psql(port, sql):
    return subprocess.run(["psql", "-h", "/tmp", "-p", str(port), "-U", "postgres", "-d", "postgres", "-qAtX", "-v", "ON_ERROR_STOP=1"],
                          input=sql, capture_output=True, text=True, check=True).stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=["minilm", "base"], default="minilm")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    models = "/tmp/pg_bge_rerank_bench"
    name = f"{args.shape}-reranker"
    if not os.path.exists(os.path.join(models, name, "model.safetensors")):
        build_model(args.shape, os.path.join(models, name))
    subprocess.run(["chmod", "-R", "a+rX", models], check=True)

    passages = [l.strip() for l in open(os.path.join(HERE, "rag_corpus.txt"), encoding="utf-8") if l.strip()][:100]
    query = "How do I read a file line by line in Python?"

    env = dict(os.environ, PG_BGE_PG="15", PG_BGE_CLUSTER="/tmp/pg_bge_cluster_rerank_bench", PG_BGE_PORT="5571")
    cluster = os.path.join(ROOT, "scripts/postgres/cluster.sh")
    subprocess.run([cluster, "start", f"bge.model_dir = '{models}'", f"bge.threads = {args.threads}"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        port = 5571
        psql(port, "CREATE EXTENSION IF NOT EXISTS pg_bge; DROP TABLE IF EXISTS cands; CREATE TABLE cands (n int, body text);")
        values = ",".join("({}, '{}')".format(i, p.replace("'", "''")) for i, p in enumerate(passages))
        psql(port, f"INSERT INTO cands VALUES {values};")
        statement = f"SELECT count(*) FROM bge_rerank('{query}', (SELECT array_agg(body ORDER BY n) FROM cands), '{name}');"
        psql(port, statement)  # loads the model
        import torch

        torch.set_num_threads(args.threads)
        from make_m3_goldens import load_flag_embedding

        load_flag_embedding()
        from FlagEmbedding import FlagReranker

        flag = FlagReranker(os.path.join(models, name), use_fp16=False, devices=["cpu"], max_length=512)
        pairs = [[query, p] for p in passages]
        flag.compute_score(pairs, batch_size=128)  # warm-up
        ours, theirs = [], []
        for _ in range(args.rounds):
            out = psql(port, "\\timing on\n" + statement + "\n")
            ours.append(float(re.search(r"Time: ([0-9.]+) ms", out).group(1)) / 1000)
            t0 = time.perf_counter()
            flag.compute_score(pairs, batch_size=128)
            theirs.append(time.perf_counter() - t0)
        tokens = psql(port, f"SELECT sum(array_length(bge_tokenize(body, '{name}'), 1)) FROM cands;").strip()
    finally:
        subprocess.run([cluster, "stop"], env=env, check=True, stdout=subprocess.DEVNULL)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    n = len(passages)
    print(f"CPU: {cpu}; {os.cpu_count()} cores; {args.threads} threads; {name}; 1 query x {n} passages ({tokens} passage tokens)")
    print(f"pg_bge bge_rerank(query, text[100]):  best {min(ours):.3f} s  -> {n / min(ours):.1f} pairs/s  (rounds {', '.join(f'{t:.3f}' for t in ours)})")
    print(f"FlagReranker (PyTorch {torch.__version__}, fp32): best {min(theirs):.3f} s  -> {n / min(theirs):.1f} pairs/s  (rounds {', '.join(f'{t:.3f}' for t in theirs)})")
    print(f"pg_bge / FlagReranker: {min(theirs) / min(ours):.2f}x")


if __name__ == "__main__":
    main()
