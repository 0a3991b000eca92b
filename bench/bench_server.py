"""Serving throughput and latency with per-request steering (not a test: numbers go to RESULTS.md).

For 1, 8 and 32 concurrent clients (closed loop: each client sends its next request as soon as the last
one is answered) against the real server over loopback HTTP, and for offline batched ``lm.generate`` on
the same prompts in batches of the same size:

  offline   - lm.generate(batch, row_steering=...) batch after batch
  server/1  - every request carries the same steering (one vector)
  server/8  - requests cycle through 8 different vectors (the cost of mixing steerings in one batch)

Reported: generated tokens per second, p50/p99 request latency, and the ratios server/offline and
mixed/one. Greedy, fixed max_tokens; the modes are interleaved repetition by repetition so that machine
load drift hits all of them alike.

Run: .venv/bin/python bench/bench_server.py [--reps 2] [--tokens 32] [--requests 64] [--threads N] [--append]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time

import httpx
import torch

import steerlab
from steerlab.data import demo_pairs, neutral_prompts
from steerlab.engine import Steering
from steerlab.server import ServerConfig, ThreadedServer, create_app

LAYERS = "8-20"
STRENGTH = 0.04


def make_vectors(lm, n: int = 8):
    """One extracted vector plus n-1 distinct variants: the same direction tilted by a different random
    perturbation (30% of its length), so every row of a mixed batch carries its own steering tensor while
    the texts, and so the number of tokens generated before EOS, stay comparable between the two loads."""
    base = steerlab.extract(lm, demo_pairs(), method="mean_diff")
    g = torch.Generator().manual_seed(0)
    out = [base]
    for _ in range(n - 1):
        noise = {}
        for i in base.layers:
            r = torch.randn(base.width, generator=g)
            noise[i] = r / r.norm() * base.directions[i].norm() * 0.3
        out.append(base + type(base)(directions=noise, model_id=base.model_id, norms=base.norms))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_offline(lm, prompts, steer_rows, batch: int, tokens: int) -> dict:
    generated, latencies = 0, []
    start = time.perf_counter()
    for i in range(0, len(prompts), batch):
        tick = time.perf_counter()
        outs = lm.generate(
            prompts[i : i + batch],
            max_new_tokens=tokens,
            row_steering=steer_rows[i : i + batch],
            details=True,
        )
        took = time.perf_counter() - tick
        generated += sum(len(o.token_ids) for o in outs)
        latencies += [took] * len(outs)
    wall = time.perf_counter() - start
    return {
        "tok_s": generated / wall,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "tok_req": generated / len(prompts),
    }


def run_server(url: str, model: str, prompts, specs, clients: int, tokens: int) -> dict:
    queue = list(range(len(prompts)))
    lock = threading.Lock()
    latencies: list[float] = []
    generated = [0]
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    i = queue.pop(0)
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": prompts[i]}],
                    "max_tokens": tokens,
                    "temperature": 0,
                }
                if specs[i]:
                    body["steering"] = specs[i]
                tick = time.perf_counter()
                r = http.post("/v1/chat/completions", json=body)
                took = time.perf_counter() - tick
                with lock:
                    if r.status_code != 200:
                        errors.append(r.text[:200])
                    else:
                        latencies.append(took)
                        generated[0] += r.json()["usage"]["completion_tokens"]

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return {
        "tok_s": generated[0] / wall,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "tok_req": generated[0] / len(prompts),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument(
        "--requests", type=int, default=64, help="requests per run at 8 and 32 clients (1 client: a quarter)"
    )
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--append", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = steerlab.load()
    vectors = make_vectors(lm)
    prompts_pool = neutral_prompts()
    app = create_app(lm, config=ServerConfig(max_batch=32, max_tokens=args.tokens))
    for i, v in enumerate(vectors):
        app.state.steerlab.registry.add(f"v{i}", v)
    levels = [int(c) for c in args.clients.split(",")]
    results: dict[tuple[int, str], list[dict]] = {}
    load_before = os.getloadavg()[0]
    with ThreadedServer(app) as server:
        for rep in range(args.reps):
            for clients in levels:
                n = max(clients, args.requests // 4 if clients == 1 else args.requests)
                prompts = [prompts_pool[i % len(prompts_pool)] for i in range(n)]
                which = {"one": [0] * n, "mixed": [i % len(vectors) for i in range(n)]}
                for mode in ("offline", "one", "mixed"):
                    pick = which["one" if mode == "offline" else mode]
                    if mode == "offline":
                        rows = [Steering(vectors[k], strength=STRENGTH, layers=LAYERS) for k in pick]
                        res = run_offline(lm, prompts, rows, clients, args.tokens)
                    else:
                        specs = [[{"vector": f"v{k}", "strength": STRENGTH, "layers": LAYERS}] for k in pick]
                        res = run_server(server.url, lm.model_id, prompts, specs, clients, args.tokens)
                    results.setdefault((clients, mode), []).append(res)
                    print(
                        f"rep {rep} clients {clients:2d} {mode:7s} {res['tok_s']:7.1f} tok/s  "
                        f"p50 {res['p50']:.2f}s p99 {res['p99']:.2f}s  {res['tok_req']:.1f} tok/req",
                        flush=True,
                    )
    load_after = os.getloadavg()[0]

    def med(clients: int, mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[(clients, mode)])

    lines = [
        "",
        "## Server (bench/bench_server.py)",
        "",
        f"Embedded SmolLM2-135M-Instruct, CPU ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads), greedy, {args.tokens} new tokens per request, steering add "
        f"{STRENGTH} (norm unit) on layers {LAYERS}; closed-loop HTTP clients on loopback; median of {args.reps} "
        f"interleaved repetitions. Load average {load_before:.1f} before / {load_after:.1f} after (machine shared).",
        "",
        "| clients | offline tok/s | server tok/s (1 vector) | server / offline | p50 / p99 s (1 vector) "
        "| server tok/s (8 vectors) | 8 vs 1 | p50 / p99 s (8 vectors) | tokens/request (offline, 1, 8) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for clients in levels:
        off, one, mixed = (med(clients, m, "tok_s") for m in ("offline", "one", "mixed"))
        lines.append(
            f"| {clients} | {off:.1f} | {one:.1f} | {one / off:.2f}x | {med(clients, 'one', 'p50'):.2f} / "
            f"{med(clients, 'one', 'p99'):.2f} | {mixed:.1f} | {mixed / one:.2f}x | {med(clients, 'mixed', 'p50'):.2f} / "
            f"{med(clients, 'mixed', 'p99'):.2f} | "
            + ", ".join(f"{med(clients, m, 'tok_req'):.1f}" for m in ("offline", "one", "mixed"))
            + " |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.append:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(table)


if __name__ == "__main__":
    main()
