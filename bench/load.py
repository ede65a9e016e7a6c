#!/usr/bin/env python3
"""Load test for `segany serve`: requests/s and p50/p99 latency for embeddings (cache miss and
cache hit) and predictions. Python standard library only; clients are threads.

Starts the server itself (release build, the tiny test model by default) on a free port, or talks
to a running one with --url. Every request is counted: 200s make the figures, anything else is
reported (503s are expected only when the concurrency exceeds --workers + --queue).

    cargo build --release --bin segany
    python3 bench/load.py                                   # tiny model, defaults below
    python3 bench/load.py --checkpoint mobile_sam.pt --config '' --requests 20
"""

import argparse
import hashlib
import http.client
import json
import math
import os
import random
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def png(width: int, height: int, seed: int) -> bytes:
    """An RGB PNG with content that differs for every seed (so every image is a cache miss)."""
    rng = random.Random(seed)
    base = bytes(rng.randrange(256) for _ in range(3 * width))
    rows = []
    for y in range(height):
        shift = (y * 7 + seed) % (3 * width)
        rows.append(b"\x00" + base[shift:] + base[:shift])
    raw = b"".join(rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


class Client:
    """One keep-alive connection per thread."""

    def __init__(self, host: str, port: int):
        self.conn = http.client.HTTPConnection(host, port, timeout=600)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        start = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - start, resp


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def run(name: str, host: str, port: int, jobs: list, concurrency: int) -> dict:
    """Runs `jobs` (method, path, body, headers) on `concurrency` threads; returns the figures."""
    lock = threading.Lock()
    queue = list(enumerate(jobs))
    latencies, statuses, errors = [], {}, []

    def worker():
        client = Client(host, port)
        while True:
            with lock:
                if not queue:
                    return
                _, job = queue.pop(0)
            try:
                status, data, elapsed, resp = client.request(*job)
            except Exception as e:  # a lost request is a finding, not a crash of the benchmark
                with lock:
                    errors.append(repr(e))
                client = Client(host, port)
                continue
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(elapsed)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "name": name,
        "requests": len(jobs),
        "concurrency": concurrency,
        "ok": len(latencies),
        "statuses": statuses,
        "errors": errors,
        "wall_s": wall,
        "rps": len(latencies) / wall if wall > 0 else float("nan"),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def start_server(args) -> tuple[subprocess.Popen, str]:
    cmd = [args.binary, "serve", "--addr", "127.0.0.1:0", "--workers", str(args.workers), "--queue", str(args.queue)]
    cmd += ["--checkpoint", args.checkpoint]
    if args.config:
        cmd += ["--config", args.config]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("segany listening on "):
        proc.kill()
        sys.exit(f"server did not start: {' '.join(cmd)}")
    return proc, line.split("segany listening on ", 1)[1].strip()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running server (default: start one)")
    p.add_argument("--binary", default=os.path.join(ROOT, "target/release/segany"))
    p.add_argument("--checkpoint", default=os.path.join(ROOT, "tests/fixtures/tiny/checkpoint.pth"))
    p.add_argument("--config", default=os.path.join(ROOT, "tests/fixtures/tiny/sam_config.json"), help="'' for none")
    p.add_argument("--model", help="model id (default: the server's default)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--queue", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=2, help="client threads")
    p.add_argument("--requests", type=int, default=40, help="per scenario")
    p.add_argument("--size", default="640x480", help="WxH of the generated images")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()

    proc = None
    if args.url:
        base = args.url.rstrip("/")
    else:
        proc, base = start_server(args)
    url = urllib.parse.urlparse(base)
    host, port = url.hostname, url.port
    try:
        models = json.loads(Client(host, port).request("GET", "/api/v1/models")[1])
        model = args.model or models["default"]
        w, h = (int(v) for v in args.size.split("x"))
        images = [png(w, h, seed) for seed in range(args.requests)]
        path = f"/api/v1/embeddings?model={model}"
        load_before = os.getloadavg()
        results = [
            run("embedding, cache miss", host, port, [("POST", path, img, {}) for img in images], args.concurrency),
            run("embedding, cache hit", host, port, [("POST", path, img, {}) for img in images], args.concurrency),
        ]
        rng = random.Random(0)
        jobs = []
        for i in range(args.requests):
            body = {
                "model": model,
                "image_sha256": hashlib.sha256(images[i % len(images)]).hexdigest(),
                "points": [{"x": rng.uniform(0, w - 1), "y": rng.uniform(0, h - 1), "label": 1}],
            }
            jobs.append(("POST", "/api/v1/predict", json.dumps(body).encode(), {"Content-Type": "application/json"}))
        results.append(run("prediction (1 point, 3 masks), by hash", host, port, jobs, args.concurrency))
        load_after = os.getloadavg()
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=60)

    print(f"server: {base}, model {model}, --workers {args.workers} --queue {args.queue}; "
          f"{args.concurrency} client threads, {args.requests} requests per row, {w}×{h} PNGs; "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print()
    print("| | requests/s | p50 | p99 | statuses |")
    print("|---|---:|---:|---:|---|")
    for r in results:
        statuses = ", ".join(f"{n}× {s}" for s, n in sorted(r["statuses"].items()))
        if r["errors"]:
            statuses += f", {len(r['errors'])} lost ({r['errors'][0]})"
        print(f"| {r['name']} | {r['rps']:.1f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {statuses} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "load": [load_before, load_after], "results": results}, f, indent=1)
    if any(r["errors"] or r["ok"] != r["requests"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
