"""Extraction speed and memory: steerlab against repeng and steering-vectors, side by side in one run.

Data: the 64 happy/sad persona pairs in ``../shared/data/bench/persona_pairs_64.json`` (already in
SmolLM2's chat template, so every tool reads exactly the same strings), all 30 layers of the embedded
SmolLM2-135M-Instruct, float32. The peers run on the very same HF model object and tokenizer.

The machine is shared, so absolute times drift; every round runs all contenders back to back in a
rotating order, and the reported ratio is the median over rounds of (time / repeng's time in the same
round). Wall and process CPU time are both shown (CPU time is less sensitive to other people's load).

Memory: ``--memory-pairs N`` runs mean_diff over N short synthetic pairs in a fresh subprocess and
reports the peak RSS (``ru_maxrss``) against the RSS right after loading the model.

Usage: ``.venv/bin/python bench/bench_extract.py [--rounds 3] [--batch-size 128] [--memory-pairs 10000]``
(needs the ``bench`` extra: ``pip install --no-deps repeng steering-vectors``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

import steerlab
from steerlab.act_cache import ActCache
from steerlab.extract import extract_cached

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bench" / "persona_pairs_64.json"


def load_pairs(path: Path = DATA) -> list[tuple[str, str]]:
    if not path.is_file():
        sys.exit(f"benchmark data not found: {path}")
    return [(p["positive"], p["negative"]) for p in json.loads(path.read_text())["pairs"]]


# ------------------------------------------------------------------------------------------------ peers
def repeng_directions(
    lm: steerlab.LM, pairs, layers, method: str = "pca_diff", batch_size: int = 32
) -> dict[int, np.ndarray]:
    """repeng's ``read_representations`` on our model object (NumPy 2 needs the ``np.float_`` shim)."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]  # repeng 0.4 still names it
    from repeng.extract import DatasetEntry, read_representations

    dataset = [DatasetEntry(positive=p, negative=n) for p, n in pairs]
    return read_representations(
        lm.model, lm.tokenizer, dataset, hidden_layers=list(layers), batch_size=batch_size, method=method
    )


def sv_directions(lm: steerlab.LM, pairs, layers, batch_size: int = 32) -> dict[int, torch.Tensor]:
    """steering-vectors' ``train_steering_vector`` (mean of pos - neg, last token, decoder-block outputs)."""
    from steering_vectors import train_steering_vector

    vec = train_steering_vector(lm.model, lm.tokenizer, pairs, layers=list(layers), batch_size=batch_size)
    return {int(k): v.float().cpu() for k, v in vec.layer_activations.items()}


def plain_forward(lm: steerlab.LM, texts: list[str], batch_size: int = 32) -> None:
    """The floor the issue quotes: batched float32 forward with all hidden states."""
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = lm.tokenizer(texts[i : i + batch_size], padding=True, return_tensors="pt")
            lm.model(**enc, output_hidden_states=True)


@contextlib.contextmanager
def reader_from(path: Path | None) -> Iterator[None]:
    """Temporarily route steerlab's reads through a candidate reader module (a proposed reader.py).

    Bench-only: lets a proposed change to the one reader be timed side by side with the current one in
    the same run. The candidate must keep reader.py's public names (``read``, ``iter_read``).
    """
    if path is None:
        yield
        return
    import importlib.util

    import steerlab.act_cache
    import steerlab.reader

    extract_module = sys.modules["steerlab.extract"]  # ``steerlab.extract`` is the function
    module = sys.modules.get("steerlab._proposed_reader")
    if module is None:
        spec = importlib.util.spec_from_file_location("steerlab._proposed_reader", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    targets = [
        (steerlab.reader, "read"),
        (steerlab.reader, "iter_read"),
        (extract_module, "iter_read"),
        (extract_module, "NormMeter"),
        (steerlab.act_cache, "read"),
    ]
    targets = [(owner, name) for owner, name in targets if hasattr(module, name)]
    saved = [getattr(owner, name) for owner, name in targets]
    for owner, name in targets:
        setattr(owner, name, getattr(module, name))
    try:
        yield
    finally:
        for (owner, name), value in zip(targets, saved, strict=True):
            setattr(owner, name, value)


# ------------------------------------------------------------------------------------------------ timing
def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def cosines(a: dict[int, Any], b: dict[int, Any]) -> list[float]:
    out = []
    for layer in sorted(a):
        x = torch.as_tensor(np.asarray(a[layer]), dtype=torch.float64)
        y = torch.as_tensor(np.asarray(b[layer]), dtype=torch.float64)
        out.append(float(x @ y / (x.norm() * y.norm())))
    return out


def speed(
    lm: steerlab.LM, pairs, rounds: int, batch_size: int, proposed: Path | None = None
) -> tuple[list[tuple[str, list, list, list]], dict[str, float]]:
    layers = list(range(lm.num_layers))
    texts = [p for pair in pairs for p in pair]
    cache_dir = Path(tempfile.mkdtemp(prefix="steerlab-bench-cache-"))
    results: dict[str, Any] = {}

    def ours(method: str, bs: int, dtype=None, reader: Path | None = None, share_prefix: bool = True):
        def run():
            with reader_from(reader), contextlib.ExitStack() as stack:
                if not share_prefix:  # the reader's shared-prefix pass off: every token of every text runs
                    saved = steerlab.reader.shared_prefix
                    steerlab.reader.shared_prefix = lambda encoded: 0
                    stack.callback(setattr, steerlab.reader, "shared_prefix", saved)
                return steerlab.extract(lm, pairs, method=method, chat=False, batch_size=bs, dtype=dtype)

        return run

    def cold():
        cache = ActCache(cache_dir)
        cache.clear()
        return extract_cached(lm, pairs, "pca_diff", cache=cache, chat=False, batch_size=batch_size)

    def warm(method: str):
        return lambda: extract_cached(
            lm, pairs, method, cache=ActCache(cache_dir), chat=False, batch_size=batch_size
        )

    b = batch_size
    rotated: dict[str, Callable[[], Any]] = {
        "repeng pca_diff (batch 32)": lambda: repeng_directions(lm, pairs, layers),
        "steering-vectors mean (batch 32)": lambda: sv_directions(lm, pairs, layers),
        "plain HF forward, hidden states (batch 32)": lambda: plain_forward(lm, texts),
        "steerlab.extract pca_diff (batch 32)": ours("pca_diff", 32),
        "steerlab.extract pca_diff, shared-prefix pass off (batch 32)": ours(
            "pca_diff", 32, share_prefix=False
        ),
        f"steerlab.extract pca_diff (batch {b})": ours("pca_diff", b),
        f"steerlab.extract mean_diff (batch {b})": ours("mean_diff", b),
        f"steerlab.extract pca_diff bf16 autocast (batch {b})": ours("pca_diff", b, torch.bfloat16),
    }
    if proposed is not None:
        rotated["steerlab.extract pca_diff, proposed reader (batch 32)"] = ours(
            "pca_diff", 32, reader=proposed
        )
        rotated[f"steerlab.extract pca_diff, proposed reader (batch {b})"] = ours(
            "pca_diff", b, reader=proposed
        )
    cached: dict[str, Callable[[], Any]] = {
        f"extract_cached pca_diff, cold: read + cache write (batch {b})": cold,
        "extract_cached pca_center from the cache": warm("pca_center"),
        "extract_cached mean_diff from the cache": warm("mean_diff"),
        "extract_cached probe from the cache": warm("probe"),
    }
    contenders = {**rotated, **cached}
    names = list(contenders)
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    first = list(rotated)
    for r in range(rounds):
        # rotate the order each round; the cache group runs as a block (cold before the warm reads)
        k = r % len(first)
        for name in first[k:] + first[:k] + list(cached):
            wall, cpu, out = timed(contenders[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
            results[name] = out
            print(f"  round {r + 1}: {name}: {wall:.2f} s wall, {cpu:.2f} s cpu", file=sys.stderr, flush=True)
    ref_wall, ref_cpu = walls[names[0]], cpus[names[0]]
    rows = [
        (
            n,
            walls[n],
            cpus[n],
            [w / x for w, x in zip(walls[n], ref_wall, strict=True)],
            [c / x for c, x in zip(cpus[n], ref_cpu, strict=True)],
        )
        for n in names
    ]
    fp32 = results[f"steerlab.extract pca_diff (batch {b})"].directions

    def worst(other: dict, absolute: bool = True) -> float:
        values = cosines(fp32, other) if other is not fp32 else [1.0]
        return min(abs(c) for c in values) if absolute else min(values)

    agreement = {
        "bf16 autocast vs float32 pca_diff, min abs(cos) over layers": worst(
            results[f"steerlab.extract pca_diff bf16 autocast (batch {b})"].directions
        ),
        "cache (cold) vs extract pca_diff, min abs(cos)": worst(results[next(iter(cached))].directions),
        # repeng's last layer is HF's final-normed hidden state (see peers_check.py): compare 0..L-2
        "ours pca_diff vs repeng pca_diff, min abs(cos), layers 0..L-2": min(
            abs(c)
            for c in cosines(
                {k: v for k, v in fp32.items() if k < lm.num_layers - 1},
                results["repeng pca_diff (batch 32)"],
            )
        ),
        "ours mean_diff vs steering-vectors, min cos": min(
            cosines(
                results[f"steerlab.extract mean_diff (batch {b})"].directions,
                results["steering-vectors mean (batch 32)"],
            )
        ),
    }
    if proposed is not None:
        agreement["proposed reader vs current reader pca_diff, min abs(cos)"] = worst(
            results[f"steerlab.extract pca_diff, proposed reader (batch {b})"].directions
        )
    return rows, agreement


# ------------------------------------------------------------------------------------------------ memory
def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(n_pairs: int, batch_size: int, proposed: Path | None = None) -> None:
    """Run in a fresh process: mean_diff over ``n_pairs`` short pairs, all layers; print JSON."""
    lm = steerlab.load()
    lm.typical_norms()  # warm what a session would have warm
    base = _rss_mb()
    pairs = [(f"happy {i}", f"sad {i}") for i in range(n_pairs)]
    with reader_from(proposed):
        wall, cpu, vec = timed(
            lambda: steerlab.extract(lm, pairs, method="mean_diff", chat=False, batch_size=batch_size)
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    held = 2 * n_pairs * lm.num_layers * lm.hidden_size * 4 / 2**20
    print(
        json.dumps(
            {
                "pairs": n_pairs,
                "reader": f"proposed ({proposed.name})" if proposed else "current",
                "layers": len(vec.layers),
                "rss_after_load_mb": base,
                "peak_rss_mb": peak,
                "wall_s": wall,
                "cpu_s": cpu,
                "all_activations_would_be_mb": held,
            }
        )
    )


def memory(n_pairs: int, batch_size: int, proposed: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--memory-child", str(n_pairs), "--batch-size", str(batch_size)]
    if proposed is not None:
        cmd += ["--proposed-reader", str(proposed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ report
def report(rows, agreement, mem, rounds: int, threads: int, n_pairs: int = 64) -> str:
    lines = [
        f"Embedded SmolLM2-135M-Instruct, {n_pairs} persona pairs ({2 * n_pairs} texts), all 30 layers, float32 unless noted; "
        f"{rounds} rounds (ratios: median over rounds of time / repeng's time in the same round), torch threads {threads}, load average at the end {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores.",
        "",
        "| contender | wall s (median) | cpu s (median) | wall × repeng | cpu × repeng |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, walls, cpus, ratios, cpu_ratios in rows:
        lines.append(
            f"| {name} | {statistics.median(walls):.2f} | {statistics.median(cpus):.2f} | "
            f"{statistics.median(ratios):.3f} | {statistics.median(cpu_ratios):.3f} |"
        )
    lines += ["", "| check | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.5f} |" for k, v in agreement.items()]
    if mem:
        lines += [
            "",
            f"mean_diff over {mem['pairs']} pairs ({2 * mem['pairs']} texts), {mem['layers']} layers: peak RSS "
            f"{mem['peak_rss_mb']:.0f} MB (RSS after loading the model {mem['rss_after_load_mb']:.0f} MB; holding all "
            f"activations would need {mem['all_activations_would_be_mb']:.0f} MB more); {mem['wall_s']:.0f} s wall.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=64, help="use only the first N pairs (smoke runs)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--memory-pairs", type=int, default=0, help="also measure mean_diff memory over N pairs"
    )
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--proposed-reader", type=Path, default=None, help="also time a candidate reader.py")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.batch_size, args.proposed_reader)
        return
    mem = memory(args.memory_pairs, args.batch_size, args.proposed_reader) if args.memory_pairs else None
    if args.memory_only:
        print(json.dumps(mem))
        return
    lm = steerlab.load()
    rows, agreement = speed(
        lm, load_pairs()[: args.pairs], args.rounds, args.batch_size, args.proposed_reader
    )
    print(report(rows, agreement, mem, args.rounds, torch.get_num_threads(), min(args.pairs, 64)))


if __name__ == "__main__":
    main()
