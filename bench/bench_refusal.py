"""The refusal direction on the embedded model: what the validation selection picks, and what it does.

Not a test: the numbers go to RESULTS.md ("Refusal direction"). Steps:

1. ``extract_refusal`` on the first ``--train`` harmful (``harmful_train.jsonl``) and harmless
   (``harmless_train.json``) instructions, selecting among every (layer, post-instruction position)
   candidate up to 80 % of the depth on ``harmful_val.jsonl[:--val]`` and ``harmless_val.json[:--val]``,
   with the direction added at ``--add-strength`` times the harmful-harmless gap;
2. the chosen direction on held-out instructions (``harmful_val.jsonl`` and ``harmless_val.json`` after
   the validation items): refusal rates unsteered, with the direction added at its layer, and with it
   ablated at every layer (greedy, ``--tokens`` new tokens, ``steerlab.methods.refusal.is_refusal``).

Usage: ``.venv/bin/python bench/bench_refusal.py [--train 64] [--val 12] [--heldout 24]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import steerlab
from steerlab.methods.refusal import (
    ablation_steerings,
    addition_steering,
    extract_refusal,
    generated_refusal_rate,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "refusal_direction"


def instructions(path: Path) -> list[str]:
    text = path.read_text()
    rows = json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in text.splitlines()]
    return [r["instruction"] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--val", type=int, default=12)
    parser.add_argument("--heldout", type=int, default=24)
    parser.add_argument("--add-strength", type=float, default=4.0)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument(
        "--save", type=Path, default=None, help="save the selected vector (with its diagnostics)"
    )
    args = parser.parse_args()
    splits = DATA / "original" / "dataset" / "splits"
    harmful, harmless = (
        instructions(DATA / "harmful_train.jsonl"),
        instructions(splits / "harmless_train.json"),
    )
    harmful_val, harmless_val = (
        instructions(DATA / "harmful_val.jsonl"),
        instructions(splits / "harmless_val.json"),
    )
    v, h = args.val, args.heldout
    lm = steerlab.load()
    tick = time.perf_counter()
    vec = extract_refusal(
        lm,
        harmful[: args.train],
        harmless[: args.train],
        val_harmful=harmful_val[:v],
        val_harmless=harmless_val[:v],
        add_strength=args.add_strength,
        max_new_tokens=args.tokens,
    )
    seconds = time.perf_counter() - tick
    layer, position = vec.provenance["layer"], vec.provenance["position"]
    table = vec.diagnostics["selection"]
    # the screen's order among candidates inside the KL budget (the rest are dropped unless none pass)
    passing = [r for r in table if r["kl_harmless"] <= 0.1] or table
    screened = sorted(passing, key=lambda r: -r["screen"])
    if args.save:
        vec.save(args.save)
    print(
        f"# {args.train} + {args.train} training instructions, {v} + {v} validation; {len(table)} candidates "
        f"(layers 0-{max(r['layer'] for r in table)}, positions {sorted({r['position'] for r in table})}); "
        f"add strength {args.add_strength}x the gap; selection took {seconds:.0f} s"
    )
    print(
        f"chosen: layer {layer}, position {position}; {len(passing)} of {len(table)} candidates within KL 0.1"
    )
    print(
        "\n| layer | position | screen (log-prob) | KL harmless (ablated) | refusal harmful: base / added / ablated | refusal harmless: base / added |"
    )
    print("|---:|---:|---:|---:|---|---|")
    for row in screened[:8]:
        gen = (
            f"{row['refusal_harmful_base']:.2f} / {row['refusal_harmful_added']:.2f} / "
            f"{row['refusal_harmful_ablated']:.2f} | {row['refusal_harmless_base']:.2f} / "
            f"{row['refusal_harmless_added']:.2f}"
            if "refusal_harmful_added" in row
            else "(not generated) | "
        )
        print(
            f"| {row['layer']} | {row['position']} | {row['screen']:.2f} | {row['kl_harmless']:.3f} | {gen} |"
        )
    held_h, held_b = harmful_val[v : v + h], harmless_val[v : v + h]
    rows = {}
    for name, steering in (
        ("unsteered", None),
        (f"added at layer {layer} (x{args.add_strength})", addition_steering(vec)),
        ("ablated at every layer", ablation_steerings(vec, lm)),
    ):
        rate_h, texts_h = generated_refusal_rate(lm, held_h, steering, max_new_tokens=args.tokens)
        rate_b, texts_b = generated_refusal_rate(lm, held_b, steering, max_new_tokens=args.tokens)
        rows[name] = (rate_h, rate_b, texts_h[0], texts_b[0])
    print(
        f"\nheld out: {len(held_h)} harmful + {len(held_b)} harmless instructions, greedy, {args.tokens} new tokens\n"
    )
    print("| condition | refusal on harmful | refusal on harmless | first harmful completion |")
    print("|---|---:|---:|---|")
    for name, (rate_h, rate_b, text_h, _) in rows.items():
        print(f"| {name} | {rate_h:.2f} | {rate_b:.2f} | {text_h[:70]!r} |")


if __name__ == "__main__":
    main()
