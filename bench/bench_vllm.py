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

    def run(batch: int, steering: str) -> float:
        requests = []
        for i in range(batch):
            text = None if steering == "plain" else texts[0] if steering == "one" else texts[i % 8]
            requests.append(
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
        best = 0.0
        for _ in range(args.reps):
            start = time.perf_counter()
            outs = engine.run(requests)
            elapsed = time.perf_counter() - start
            best = max(best, sum(len(o.outputs[0].token_ids) for o in outs) / elapsed)
        return best

    print("| batch | plain vLLM tok/s | one steering tok/s | 8 steerings tok/s | one/plain | 8/one |")
    print("|---|---:|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batches.split(",")):
        plain, one, eight = run(batch, "plain"), run(batch, "one"), run(batch, "eight")
        print(f"| {batch} | {plain:.1f} | {one:.1f} | {eight:.1f} | {one / plain:.3f} | {eight / one:.3f} |")


if __name__ == "__main__":
    main()
