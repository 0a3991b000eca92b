"""vLLM with and without steerlab's per-request steering, side by side in one run (run on a quiet machine).

Greedy decoding of ``--tokens`` tokens at batch 1 / 8 / 32 on the embedded model, fp32, in-process vLLM
(``enforce_eager``): plain requests; every request steered with one shared steering; every request with
one of 8 different steerings (the per-request path). Prints tok/s and the ratios the issue targets
(steering costs <= 3% at 8 and 32; 8 steerings >= 0.95x of one). Run with ``.venv-vllm/bin/python``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--torch", action="store_true", help="also time steerlab's torch engine (once each)")
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
        reqs = requests_for(batch, steering)
        return timed(lambda: sum(len(o.outputs[0].token_ids) for o in engine.run(reqs)))

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

    modes = ("plain", "one", "eight")
    print(
        f"# {args.tokens} tokens per request, best of {args.reps} repetitions, modes interleaved per repetition"
    )
    print(
        "| batch | plain vLLM tok/s | one steering tok/s | 8 steerings tok/s | one/plain | 8/one | torch engine plain / one |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batches.split(",")):
        vllm_run(batch, "one")  # warm-up: the first pass at a new batch shape pays one-off costs
        best = dict.fromkeys(modes, 0.0)
        for _ in range(args.reps):
            for mode in modes:
                best[mode] = max(best[mode], vllm_run(batch, mode))
        torch_plain = torch_one = float("nan")
        if args.torch:
            torch_plain, torch_one = torch_run(batch, "plain"), torch_run(batch, "one")
        plain, one, eight = best["plain"], best["one"], best["eight"]
        print(
            f"| {batch} | {plain:.1f} | {one:.1f} | {eight:.1f} | {one / plain:.3f} | {eight / one:.3f} "
            f"| {torch_plain:.1f} / {torch_one:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
