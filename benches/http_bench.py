#!/usr/bin/env python3
"""bge-serve against a peer HTTP embedding server on the same machine, in the same run:

    python3 benches/http_bench.py MODEL_DIR [--infinity PATH_TO_infinity_emb] [--seconds 6] [--rounds 2] [--precisions fp32,int8]

MODEL_DIR is a sentence-transformers directory (all-MiniLM-L6-v2). Starts target/release/bge-serve
over it (--device cpu, one instance per --precisions entry) and, with --infinity, Infinity (`infinity_emb v2`, torch engine on
the CPU) over the same directory, then for each server in turn (interleaved, `--rounds` times):
- throughput with 1, 16 and 64 concurrent clients, each sending one passage of
  benches/corpus.txt per request (OpenAI /embeddings, encoding_format float) for `--seconds`;
  texts/s and tokens/s (tokens after truncation to max_seq_length, counted once with the model's
  tokenizer.json so both servers are credited alike);
- p50/p99 latency of single-text requests from one client.
The client is a small asyncio HTTP/1.1 keep-alive client, the same for both servers; it runs on
the same cores, so absolute numbers include its cost. Prints a markdown table (medians over rounds).
"""
import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONCURRENCY = [1, 16, 64]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(port, path, proc, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"server on port {port} not ready after {seconds}s")


async def one_request(reader, writer, head, body):
    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    status = await reader.readline()
    length = None
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length is None:
        raise RuntimeError(f"no content-length in the answer ({status!r})")
    payload = await reader.readexactly(length)
    if not status.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{status!r}: {payload[:200]!r}")
    return payload


async def client(port, path, model, texts, start, stop_at, counts, latencies):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ".encode()
    i = start
    while time.perf_counter() < stop_at:
        text_index = i % len(texts)
        body = json.dumps({"model": model, "input": [texts[text_index]], "encoding_format": "float"}).encode()
        t0 = time.perf_counter()
        payload = await one_request(reader, writer, head, body)
        latencies.append(time.perf_counter() - t0)
        if i == start:
            json.loads(payload)["data"][0]["embedding"]  # a real answer, once per client
        counts.append(text_index)
        i += 97
    writer.close()


async def load(port, path, model, texts, clients, seconds):
    counts, latencies = [], []
    # Warm-up: a second of the same load, not counted.
    warm_stop = time.perf_counter() + 1
    await asyncio.gather(*(client(port, path, model, texts, c * 13, warm_stop, [], []) for c in range(clients)))
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(client(port, path, model, texts, c * 13, stop_at, counts, latencies) for c in range(clients)))
    return counts, latencies, time.perf_counter() - started


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--infinity", help="path of infinity_emb (e.g. a venv's bin/infinity_emb)")
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precisions", default="fp32", help="bge-serve instances to run, e.g. fp32,int8 (only fp32 equals SQL bitwise)")
    args = ap.parse_args()
    model_dir = os.path.abspath(args.model_dir)
    texts = [line.rstrip("\n") for line in open(os.path.join(ROOT, "benches", "corpus.txt")) if line.strip()]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    max_len = json.load(open(os.path.join(model_dir, "sentence_bert_config.json")))["max_seq_length"]
    tokenizer.no_padding()  # tokenizer.json may pad (all-MiniLM-L6-v2 pads to 128): count real tokens
    tokenizer.enable_truncation(max_len)
    tokens_of = [len(e.ids) for e in tokenizer.encode_batch(texts)]

    servers, procs = [], []
    work = tempfile.mkdtemp(prefix="http_bench.")
    name = os.path.basename(model_dir.rstrip("/"))
    os.symlink(model_dir, os.path.join(work, name))
    for precision in args.precisions.split(","):
        port = free_port()
        procs.append(subprocess.Popen([os.path.join(ROOT, "target/release/bge-serve"), "--models", work, "--listen", f"127.0.0.1:{port}", "--device", "cpu",
                                       "--precision", precision], stderr=open(os.path.join(work, f"bge-serve-{precision}.log"), "w")))
        wait_ready(port, "/health", procs[-1])
        servers.append((f"bge-serve {precision}", port, "/v1/embeddings", name))
    if args.infinity:
        iport = free_port()
        procs.append(subprocess.Popen([args.infinity, "v2", "--model-id", model_dir, "--port", str(iport), "--engine", "torch", "--device", "cpu",
                                       "--no-bettertransformer"], stdout=open(os.path.join(work, "infinity.log"), "w"), stderr=subprocess.STDOUT,
                                      cwd=work))  # Infinity writes .infinity_cache into its working directory
        wait_ready(iport, "/health", procs[-1])
        venv_python = os.path.join(os.path.dirname(args.infinity), "python")
        version = subprocess.run([venv_python, "-c", "import importlib.metadata as m; print(m.version('infinity_emb'))"], capture_output=True, text=True).stdout.strip()
        servers.append((f"Infinity {version or '?'} (torch fp32)", iport, "/embeddings", model_dir))
    try:
        results = {(s[0], c): [] for s in servers for c in CONCURRENCY}
        for _ in range(args.rounds):
            for clients in CONCURRENCY:
                for label, p, path, model in servers:
                    counts, latencies, elapsed = asyncio.run(load(p, path, model, texts, clients, args.seconds))
                    tokens = sum(tokens_of[i] for i in counts)
                    latencies.sort()
                    results[(label, clients)].append((len(counts) / elapsed, tokens / elapsed, latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]))
                    print(f"  {label}, {clients} clients: {len(counts) / elapsed:.1f} texts/s", file=sys.stderr)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{len(texts)} passages of benches/corpus.txt, one per request, {args.seconds:.0f} s per setting, median of {args.rounds} interleaved rounds\n")
    print("| server | clients | texts/s | tokens/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for clients in CONCURRENCY:
        for label, *_ in servers:
            rows = results[(label, clients)]
            med = [statistics.median(r[k] for r in rows) for k in range(4)]
            print(f"| {label} | {clients} | {med[0]:,.0f} | {med[1]:,.0f} | {med[2] * 1000:.2f} | {med[3] * 1000:.2f} |")


if __name__ == "__main__":
    main()
