#!/usr/bin/env python3
"""bge-serve's memory over many requests: a mix of valid requests (all three shapes), malformed
bodies, wrong types, unknown models and clients that hang up mid-body or before the answer, from
8 keep-alive clients; prints the server's resident memory every 10,000 requests.

    python3 benches/http_soak.py [--requests 100000] [--models engine/tests/models]

Uses the tiny committed models by default, so the engine's time does not dominate.
"""
import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


BODIES = [
    ("/v1/embeddings", json.dumps({"model": "tiny-bge-m3", "input": "a short text about tables"}).encode()),
    ("/v1/embeddings", json.dumps({"model": "BAAI/TINY_BGE_M3", "input": ["one", "two", "three"], "encoding_format": "base64"}).encode()),
    ("/ai/run/@cf/baai/tiny-bge-m3", json.dumps({"text": ["x", "y"]}).encode()),
    ("/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/tiny_bge_m3", json.dumps({"input": ["z"]}).encode()),
    ("/v1/embeddings", b"{not json"),
    ("/v1/embeddings", json.dumps({"model": "tiny-bge-m3", "input": [1, "a"]}).encode()),
    ("/v1/embeddings", json.dumps({"model": "nope", "input": "a"}).encode()),
    ("/v1/embeddings", b"\xff\xfe" * 50),
]


STATUSES = {}


async def worker(port, count, start, done):
    reader = writer = None
    for k in range(start, start + count):
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if k % 50 == 7:  # hang up mid-body
            writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 999\r\n\r\n{\"model\"")
            await writer.drain()
            writer.close()
            writer = None
            done.append(k)
            continue
        path, body = BODIES[k % len(BODIES)]
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        if k % 50 == 31:  # hang up before the answer
            writer.close()
            writer = None
            done.append(k)
            continue
        length = None
        status = (await reader.readline()).split(b" ")[1].decode()
        STATUSES[status] = STATUSES.get(status, 0) + 1
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await reader.readexactly(length or 0)
        done.append(k)


async def run(port, total, pid):
    done = []
    step = 10_000
    for base in range(0, total, step):
        n = min(step, total - base)
        per = n // 8
        await asyncio.gather(*(worker(port, per, base + i * per, done) for i in range(8)))
        print(f"{base + n:>7} requests: resident memory {rss_kib(pid):,} KiB", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--models", default=os.path.join(ROOT, "engine/tests/models"))
    args = ap.parse_args()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = subprocess.Popen([os.path.join(ROOT, "target/release/bge-serve"), "--models", args.models, "--listen", f"127.0.0.1:{port}", "--device", "cpu"],
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        started = time.time()
        asyncio.run(run(port, args.requests, server.pid))
        print(f"{args.requests} requests in {time.time() - started:.0f} s; answers by status: {dict(sorted(STATUSES.items()))}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    sys.exit(0)


if __name__ == "__main__":
    main()
