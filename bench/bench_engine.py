"""Cost of steering per decode step on the embedded model (not a test: numbers go to RESULTS.md).

Modes, interleaved repetition by repetition in one process so drift hits all alike:
  plain     - no hooks
  bare      - one do-nothing-but-add forward hook per steered layer (the floor for any hook engine)
  steerlab  - lm.steer(vector, add, layers 10-20)
  mixed8    - batch of 8 with 8 different per-row steerings (batch 8 only)
Per mode: median milliseconds of single decode-step forwards (KV cache, ~30-token prompt), the hooks'
own cost timed in isolation (see ``isolated_hook_cost``), and whole 128-token generations. Also cold/warm
model load times.

Run: .venv/bin/python bench/bench_engine.py [--reps 6] [--steps 32]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import subprocess
import sys
import time

import torch

import steerlab
from steerlab.decode.kv import cache_arg, returned_cache

PROMPT = "Write a short paragraph about the history of the bicycle and how it changed city life in Europe."
LAYERS = list(range(10, 21))


def bare_hooks(lm, vector):
    handles = []
    for layer in LAYERS:
        delta = vector[layer].view(1, 1, -1) * 0.01

        def hook(module, args, out, delta=delta):
            return out + delta

        handles.append(lm.anatomy.module(layer, "resid").register_forward_hook(hook))
    return handles


@contextlib.contextmanager
def mode_context(lm, mode, vector, batch):
    if mode == "plain":
        yield
    elif mode == "bare":
        handles = bare_hooks(lm, vector)
        try:
            yield
        finally:
            for h in handles:
                h.remove()
    elif mode == "steerlab":
        with lm.steer(vector, strength=0.03, layers=LAYERS):
            yield
    elif mode == "mixed8":
        rows = [steerlab.Steering(vector * (1 + i / 10), strength=0.03, layers=LAYERS) for i in range(batch)]
        with lm.steer_rows(rows):
            yield
    else:
        raise ValueError(mode)


def isolated_hook_cost(lm, vector, batch: int, calls: int = 20000) -> dict[str, float]:
    """Microseconds per decode step that steerlab's hooks add, timed apart from the model's matmuls.

    Whole-model step times on a 2-core CPU wobble by several milliseconds between repetitions, far
    more than the hooks cost, so the hooks are also timed in isolation: (a) PyTorch's dispatch of one
    forward hook, as the difference between calling an ``nn.Identity`` with and without a hook, and
    (b) the body of each installed steerlab hook on a decode-step-shaped output. Their sum over the
    steered layers is the added cost per step.
    """
    width = lm.hidden_size
    out = torch.randn(batch, 1, width)

    def per_call(fn) -> float:
        for _ in range(200):
            fn()
        tick = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - tick) / calls * 1e6

    plain = torch.nn.Identity()
    hooked = torch.nn.Identity()
    hooked.register_forward_hook(lambda m, a, o: o)
    dispatch = per_call(lambda: hooked(out)) - per_call(lambda: plain(out))
    with lm.steer(vector, strength=0.03, layers=LAYERS):
        hooks = [
            (module, hook)
            for layer in LAYERS
            for module in [lm.anatomy.module(layer, "resid")]
            for hook in module._forward_hooks.values()
        ]
        body = sum(per_call(lambda m=m, h=h: h(m, (), out)) for m, h in hooks)
    return {"hooks": len(hooks), "dispatch_us": dispatch * len(hooks), "body_us": body}


def decode_step_times(lm, batch, steps):
    texts = [lm.chat(PROMPT)] * batch
    ids = torch.tensor([lm.encode(t) for t in texts])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = lm.model(input_ids=ids, attention_mask=mask, use_cache=True)
        cache = returned_cache(out)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        times = []
        for _ in range(steps):
            mask = torch.cat([mask, mask.new_ones((batch, 1))], 1)
            tick = time.perf_counter()
            out = lm.model(input_ids=nxt, attention_mask=mask, use_cache=True, **{cache_arg(lm): cache})
            times.append(time.perf_counter() - tick)
            cache = returned_cache(out)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--gen-reps", type=int, default=3, help="whole-generation repetitions per mode")
    parser.add_argument("--skip-steps", action="store_true", help="skip the whole-model step timing")
    args = parser.parse_args()
    torch.manual_seed(0)

    cold = subprocess.run(
        [sys.executable, "-c", "import time,steerlab;t=time.time();steerlab.load();print(time.time()-t)"],
        capture_output=True,
        text=True,
        check=True,
    )
    lm = steerlab.load()  # pays transformers' lazy imports
    tick = time.perf_counter()
    lm = steerlab.load()
    warm_load = time.perf_counter() - tick
    from steerlab.data import demo_pairs

    vector = steerlab.extract(lm, demo_pairs(), layers=LAYERS)
    print(
        f"# machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )
    print(
        f"load (fresh process, cached copy): {float(cold.stdout.strip().splitlines()[-1]):.2f} s; "
        f"in-process reload: {warm_load:.2f} s"
    )
    for batch in [] if args.skip_steps else (1, 8):
        modes = ["plain", "bare", "steerlab"] + (["mixed8"] if batch == 8 else [])
        samples: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.reps):
            for mode in modes:
                with mode_context(lm, mode, vector, batch):
                    samples[mode].extend(decode_step_times(lm, batch, args.steps))
        med = {m: statistics.median(v) * 1000 for m, v in samples.items()}
        line = ", ".join(f"{m} {med[m]:.2f} ms" for m in modes)
        print(f"batch {batch}: median decode step: {line}")
        print(
            f"batch {batch}: added per step: bare {med['bare'] - med['plain']:+.3f} ms, "
            f"steerlab {med['steerlab'] - med['plain']:+.3f} ms"
            + (
                f", mixed8 vs one steering: {med['steerlab'] / med['mixed8']:.3f}x throughput"
                if batch == 8
                else ""
            )
        )
    for batch in (1, 8):
        iso = isolated_hook_cost(lm, vector, batch)
        print(
            f"batch {batch}: isolated hook cost per step ({iso['hooks']} hooks): dispatch "
            f"{iso['dispatch_us']:.1f} us + bodies {iso['body_us']:.1f} us = "
            f"{(iso['dispatch_us'] + iso['body_us']) / 1000:.3f} ms"
        )
    gens = {"plain": [], "steerlab": []}
    for _ in range(args.gen_reps):
        for mode in gens:
            with mode_context(lm, mode, vector, 1):
                tick = time.perf_counter()
                lm.generate(PROMPT, max_new_tokens=args.gen_tokens, stop=None)
                gens[mode].append(time.perf_counter() - tick)
    print(
        f"whole {args.gen_tokens}-token generation (median of {args.gen_reps}): "
        + ", ".join(f"{m} {statistics.median(v):.3f} s" for m, v in gens.items())
    )


if __name__ == "__main__":
    main()
