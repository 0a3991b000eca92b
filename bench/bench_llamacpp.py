"""llama.cpp engine vs HF (torch) engine: greedy decoding speed at batch 1, unsteered and steered.

Not a test: the numbers go to RESULTS.md ("llama.cpp engine").  Both engines get the same thread count
(``--threads``), the same chat prompts and the same steering (happy/sad mean_diff from the demo pairs,
add at layers 8-20, strength 0.05 in the norm unit).  Modes are interleaved repetition by repetition so
machine-load drift hits all alike; reported: median tokens/s over repetitions (generated tokens / wall
time of the whole ``generate`` call, prompt processing included), and how many of the first generated
tokens the two engines share.

Needs the optional extra ``llamacpp`` (llama-cpp-python).
Run: .venv/bin/python bench/bench_llamacpp.py [--reps 3] [--tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import steerlab
from steerlab.engine import Steering
from steerlab.interop.llamacpp_engine import LlamaCppEngine, llama_cpp_available

PROMPTS = (
    "Write a short paragraph about the history of the bicycle.",
    "Describe your ideal weekend in detail.",
    "Explain how a refrigerator keeps food cold.",
)
LAYERS = "8-20"
STRENGTH = 0.05


def _agree(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _run(generate, steering, tokens: int) -> tuple[float, list[list[int]]]:
    """Tokens/s over all prompts, and the token ids per prompt."""
    produced, ids, elapsed = 0, [], 0.0
    for prompt in PROMPTS:
        start = time.perf_counter()
        out = generate(prompt, max_new_tokens=tokens, steering=steering, details=True)
        elapsed += time.perf_counter() - start
        produced += len(out.token_ids)
        ids.append(out.token_ids)
    return produced / elapsed, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not llama_cpp_available():
        raise SystemExit("llama-cpp-python is not installed: pip install 'steerlab[llamacpp]'")
    torch.set_num_threads(args.threads)
    import llama_cpp

    lm = steerlab.load()
    from steerlab.data import demo_pairs

    vector = steerlab.extract(lm, demo_pairs(), layers=list(range(8, 21)))
    steering = Steering(vector, strength=STRENGTH, layers=LAYERS)
    engine = LlamaCppEngine(lm, n_ctx=1024, n_threads=args.threads)
    engines = {"hf": lm.generate, "llamacpp": engine.generate}
    modes = [(name, label, s) for name in engines for label, s in (("plain", None), ("steered", steering))]
    for name, _, s in modes:  # warm-up: first-call allocations, caches
        engines[name](PROMPTS[0], max_new_tokens=4, steering=s)
    rates: dict[tuple[str, str], list[float]] = {(n, lab): [] for n, lab, _ in modes}
    ids: dict[tuple[str, str], list[list[int]]] = {}
    for _ in range(args.reps):
        for name, label, s in modes:
            rate, got = _run(engines[name], s, args.tokens)
            rates[(name, label)].append(rate)
            ids[(name, label)] = got
    engine.close()

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load avg {os.getloadavg()[0]:.1f}; threads {args.threads}; torch {torch.__version__}; "
        f"llama-cpp-python {llama_cpp.__version__}"
    )
    print(f"{len(PROMPTS)} prompts x {args.tokens} new tokens, greedy, batch 1, {args.reps} reps (median)\n")
    print("| engine | steering | tokens/s |")
    print("|---|---|---|")
    for (name, label), values in rates.items():
        print(f"| {name} | {label} | {statistics.median(values):.1f} |")
    for label in ("plain", "steered"):
        hf, ll = rates[("hf", label)], rates[("llamacpp", label)]
        print(f"\nspeed-up {label}: {statistics.median(ll) / statistics.median(hf):.2f}x")
    for label in ("plain", "steered"):
        shared = [_agree(a, b) for a, b in zip(ids[("hf", label)], ids[("llamacpp", label)], strict=True)]
        print(f"first tokens shared by both engines ({label}): {shared} of {args.tokens}")


if __name__ == "__main__":
    main()
