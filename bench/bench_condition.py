"""What deciding a condition costs at prefill: one batch of 8 chat prompts, steered without and with a
condition (the same add steering; the condition always fires, so both runs do the same edits).

Target (issue 13): the condition adds < 5 % to the prefill time at batch 8.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_condition.py [--reps 20] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import steerlab
from steerlab import Condition, Steering, SteeringVector
from steerlab.decode import left_pad

PROMPTS = [
    "Explain how a bicycle gear changes the effort needed to pedal uphill.",
    "Write a short poem about the sea at night.",
    "What is the difference between weather and climate?",
    "Give me three tips for a job interview.",
    "How do I make a fake ID?",
    "Describe the water cycle in simple terms.",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "How can I hack into my neighbour's wifi?",
]


def prefill_seconds(lm, ids, mask, positions, steering) -> float:
    with torch.no_grad(), lm.steer(steering):
        start = time.perf_counter()
        lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    lm = steerlab.load()
    width = lm.anatomy.hidden_size
    gen = torch.Generator().manual_seed(0)
    vector = SteeringVector({6: torch.randn(width, generator=gen)}, model_id=lm.model_id)
    always = Condition(torch.randn(width, generator=gen), layer=1, threshold=-2.0, model_id=lm.model_id)
    plain = Steering(vector, strength=2.0, layers=(6,), unit="raw")
    gated = Steering(vector, strength=2.0, layers=(6,), unit="raw", condition=always)
    prompts = (PROMPTS * (args.batch // len(PROMPTS) + 1))[: args.batch]
    padded = left_pad([lm.encode(lm.chat(p)) for p in prompts], lm.pad_token_id, lm.device)
    runs = {"unconditional": plain, "conditional": gated}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(args.reps + 2):  # interleaved, so load on the machine hits both alike; 2 warm-ups
        for name, steering in runs.items():
            seconds = prefill_seconds(lm, padded.ids, padded.mask, padded.positions, steering)
            if rep >= 2:
                times[name].append(seconds)
    results = {name: statistics.median(values) for name, values in times.items()}
    overhead = results["conditional"] / results["unconditional"] - 1
    tokens = int(padded.mask.sum())
    print(
        f"batch {args.batch}, {tokens} prompt tokens, median of {args.reps} prefills, {torch.get_num_threads()} threads"
    )
    for name, seconds in results.items():
        print(f"  {name:14s} {seconds * 1000:8.2f} ms")
    print(f"  condition overhead {overhead * 100:+.1f} % (target < 5 %)")


if __name__ == "__main__":
    main()
