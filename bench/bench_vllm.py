"""vLLM with and without steerlab's per-request steering, side by side in one run (run on a quiet machine).

Greedy decoding of ``--tokens`` tokens at batch 1 / 8 / 32 on the embedded model, fp32, in-process vLLM
(``enforce_eager``): stock vLLM (steerlab's hooks taken off); the plugin installed and no request steered;
every request steered with one shared steering; every request with one of 8 different steerings (the
per-request path). Prints tok/s and the ratios the issue targets
(steering costs <= 3% at 8 and 32; 8 steerings >= 0.95x of one). Run with ``.venv-vllm/bin/python``.

Ratios are paired: each repetition times the four modes back to back, so a ratio compares runs seconds
apart and slow drift in machine load cancels, and the order of the modes rotates between repetitions; the
table gives the median paired ratio, a bootstrap 95% interval of that median, and the range over
repetitions (the 3% target is met when the interval lies above 0.97, missed when it lies below).

``--torch`` also times steerlab's torch engine, and ``--llamacpp PYTHON`` the llama.cpp engine in that
interpreter (the main ``.venv``: llama-cpp-python is not installed beside vLLM) on the same prompt, tokens
and steering, at batch 1 and 8 (it runs requests one after another).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--torch", action="store_true", help="also time steerlab's torch engine (once each)")
    parser.add_argument(
        "--account",
        type=int,
        default=0,
        metavar="N",
        help="also time steerlab's own code inside N steered runs per batch and mode (its share of the run)",
    )
    parser.add_argument("--llamacpp", metavar="PYTHON", help="also time the llama.cpp engine in this Python")
    args = parser.parse_args()

    import torch

    import steerlab
    from steerlab.backends.vllm.engine import encode_steerings, engine_for
    from steerlab.engine.spec import Steering
    from steerlab.vector import SteeringVector

    lm = steerlab.load()
    engine = engine_for(lm, max_num_seqs=64, enable_prefix_caching=False)
    g = torch.Generator().manual_seed(0)
    vectors = [
        SteeringVector(
            {i: torch.randn(lm.hidden_size, generator=g) for i in range(8, 16)}, model_id=lm.model_id
        )
        for _ in range(8)
    ]
    texts = [encode_steerings(lm, [Steering(v, strength=0.3, unit="norm")]) for v in vectors]
    prompt = lm.encode(lm.chat("Write a short story about a lighthouse."))

    def requests_for(batch: int, steering: str) -> list:
        out = []
        for i in range(batch):
            text = None if steering == "plain" else texts[0] if steering == "one" else texts[i % 8]
            out.append(
                engine.request(
                    prompt,
                    text,
                    max_tokens=args.tokens,
                    temperature=0.0,
                    top_p=1.0,
                    seed=None,
                    stop=None,
                    ignore_eos=True,
                )
            )
        return out

    def timed(fn) -> float:
        start = time.perf_counter()
        tokens = fn()
        return tokens / (time.perf_counter() - start)

    def vllm_run(batch: int, steering: str) -> float:
        reqs = requests_for(batch, "plain" if steering == "bare" else steering)
        if steering == "bare":  # stock vLLM: steerlab's hooks taken off (outside the timed part)
            engine.llm.collective_rpc("steerlab_remove")
        try:
            return timed(lambda: sum(len(o.outputs[0].token_ids) for o in engine.run(reqs)))
        finally:
            if steering == "bare":
                engine.llm.collective_rpc("steerlab_install")

    def torch_run(batch: int, steering: str) -> float:
        rows = None if steering == "plain" else [Steering(vectors[0], strength=0.3, unit="norm")] * batch
        chat = "Write a short story about a lighthouse."
        return timed(
            lambda: sum(
                g.completion_tokens
                for g in lm.generate(
                    [chat] * batch, max_new_tokens=args.tokens, row_steering=rows, details=True
                )
            )
        )

    modes = ("bare", "plain", "one", "eight")
    if args.reps > 0:  # --reps 0: only the accounting below
        print(
            f"# {args.tokens} tokens per request, {args.reps} repetitions, modes back to back in each; load avg "
            f"{os.getloadavg()[0]:.1f} at start"
        )
        print(
            "| batch | stock vLLM tok/s | plugin, unsteered | one steering | 8 steerings "
            "| one/stock median [95% CI] (range) | unsteered/stock | 8/one | torch engine plain / one |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for batch in (int(b) for b in args.batches.split(",")):
            vllm_run(batch, "one")  # warm-up: the first pass at a new batch shape pays one-off costs
            rates: dict[str, list[float]] = {m: [] for m in modes}
            for rep in range(args.reps):
                shift = rep % len(modes)
                for mode in modes[shift:] + modes[:shift]:  # rotate the order: no mode always runs first
                    rates[mode].append(vllm_run(batch, mode))
            torch_plain = torch_one = float("nan")
            if args.torch:
                torch_plain, torch_one = torch_run(batch, "plain"), torch_run(batch, "one")
            cost = [o / b for o, b in zip(rates["one"], rates["bare"], strict=True)]
            idle = [p / b for p, b in zip(rates["plain"], rates["bare"], strict=True)]
            per = [e / o for e, o in zip(rates["eight"], rates["one"], strict=True)]
            med = {m: statistics.median(v) for m, v in rates.items()}
            print(
                f"| {batch} | {med['bare']:.1f} | {med['plain']:.1f} | {med['one']:.1f} | {med['eight']:.1f} "
                f"| {ratio(cost)} | {ratio(idle)} | {ratio(per)} "
                f"| {torch_plain:.1f} / {torch_one:.1f} |",
                flush=True,
            )
    if args.account:
        account(engine, vllm_run, [int(b) for b in args.batches.split(",")], args.account)
    if args.llamacpp:
        print("\n| llama.cpp engine (same prompt, tokens, steering) | plain tok/s | one steering tok/s |")
        print("|---|---:|---:|")
        got = json.loads(
            subprocess.run(
                [args.llamacpp, "-c", LLAMACPP, str(args.tokens), str(min(args.reps, 2))],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for batch, (plain, one) in got.items():
            print(f"| batch {batch} (sequential) | {plain:.1f} | {one:.1f} |")


def account(engine, vllm_run, batches: list[int], reps: int) -> None:
    """Time spent inside steerlab's code during steered runs, as a share of each run's wall time.

    Throughput ratios on a small shared box scatter by +-20 % from run to run, far more than a 3 % target;
    this measures the cost directly instead: every call into steerlab on the serving path (the model's
    pre-hook, each layer hook, the processor's per-step ``update_state``, admission's ``validate_params``)
    is wrapped in a timer. Calls run on the step's critical path, so their sum bounds what steering adds
    (the timer's own overhead included, so it errs high).
    """
    from steerlab.backends.vllm import hooks
    from steerlab.backends.vllm.plugin import SteerlabLogitsProcessor

    spent = [0.0]

    def timing(fn):
        def timed_call(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[0] += time.perf_counter() - start

        return timed_call

    layer_hook, begin = hooks.BatchSteerer._layer_hook, hooks.BatchSteerer.begin
    update, validate = SteerlabLogitsProcessor.update_state, SteerlabLogitsProcessor.validate_params
    hooks.BatchSteerer._layer_hook = lambda self, layer: timing(layer_hook(self, layer))
    hooks.BatchSteerer.begin = timing(begin)
    SteerlabLogitsProcessor.update_state = timing(update)
    SteerlabLogitsProcessor.validate_params = classmethod(timing(validate.__func__))
    engine.llm.collective_rpc("steerlab_remove")  # reinstall: the hooks are bound when installed
    engine.llm.collective_rpc("steerlab_install")
    print("\n| batch | steering | steerlab's share of the run, median (range) | runs |")
    print("|---|---|---:|---:|")
    for batch in batches:
        for mode, label in (("one", "one for all"), ("eight", "8 different")):
            shares = []
            for _ in range(reps):
                spent[0] = 0.0
                start = time.perf_counter()
                vllm_run(batch, mode)
                shares.append(spent[0] / (time.perf_counter() - start))
            print(
                f"| {batch} | {label} | {statistics.median(shares):.2%} ({min(shares):.2%}-{max(shares):.2%}) "
                f"| {reps} |",
                flush=True,
            )


def ratio(values: list[float]) -> str:
    return (
        f"{statistics.median(values):.3f} [{median_interval(values)}] ({min(values):.3f}-{max(values):.3f})"
    )


def median_interval(values: list[float], level: float = 0.95, draws: int = 4000) -> str:
    """Percentile-bootstrap interval of the median paired ratio (seeded: the same run prints the same)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    lo, hi = medians[int(draws * (1 - level) / 2)], medians[int(draws * (1 + level) / 2) - 1]
    return f"{lo:.3f}, {hi:.3f}"


#: Run in the main environment: the same embedded model, prompt and first random vector as above.
LLAMACPP = """
import json, statistics, sys, time
import torch
import steerlab
from steerlab.engine.spec import Steering
from steerlab.interop.llamacpp_engine import LlamaCppEngine
from steerlab.vector import SteeringVector
tokens, reps = int(sys.argv[1]), int(sys.argv[2])
lm = steerlab.load()
g = torch.Generator().manual_seed(0)
vector = SteeringVector({i: torch.randn(lm.hidden_size, generator=g) for i in range(8, 16)}, model_id=lm.model_id)
steer = Steering(vector, strength=0.3, unit="norm")
engine = LlamaCppEngine(lm, n_ctx=1024, n_threads=2)
chat = "Write a short story about a lighthouse."
engine.generate(chat, max_new_tokens=4)
out = {}
for batch in (1, 8):
    rates = {"plain": [], "one": []}
    for _ in range(reps):
        for mode, s in (("plain", None), ("one", steer)):
            start = time.perf_counter()
            gens = engine.generate([chat] * batch, max_new_tokens=tokens, steering=s, details=True)
            rates[mode].append(sum(x.completion_tokens for x in gens) / (time.perf_counter() - start))
    out[batch] = (statistics.median(rates["plain"]), statistics.median(rates["one"]))
engine.close()
print(json.dumps(out))
"""


if __name__ == "__main__":
    main()
