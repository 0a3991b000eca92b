"""Agreement with peer libraries on the same pairs and layers (a dev check: peers are not dependencies).

* our ``pca_diff`` vs repeng's ``pca_diff``: |cosine| >= 0.99 at every layer (a principal axis has no
  sign of its own; ours is oriented to the positive side, repeng's by a pairwise vote);
* our ``pca_center`` vs repeng's ``pca_center``: reported, same criterion;
* our ``mean_diff`` vs steering-vectors' mean aggregator: cosine >= 0.999 at every layer.

repeng reads HF ``hidden_states[i + 1]``, and HF applies the model's final norm to the *last* entry of
``hidden_states``: repeng's last layer is normed, ours (the block output, as llama.cpp and steering-vectors
read it) is not. The criterion is therefore checked on layers 0..L-2, and the last layer is reported twice:
as read (a convention difference, not an error) and with the final norm applied to our activations.

Data: the 64 persona pairs of ``../shared/data/bench/persona_pairs_64.json`` (pre-rendered in the chat
template, read with ``chat=False``), all 30 layers of the embedded SmolLM2-135M-Instruct. Exit code 1 if a
criterion fails. Usage: ``.venv/bin/python bench/peers_check.py [--pairs 64]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import steerlab
from bench_extract import cosines, load_pairs, repeng_directions, sv_directions

CRITERIA = {
    "pca_diff": ("repeng", 0.99, True),
    "pca_center": ("repeng", 0.99, True),
    "mean_diff": ("steering-vectors", 0.999, False),
}


def _last_layer_normed(lm: steerlab.LM, pairs, layer: int) -> dict[str, object]:
    """Our pca directions at the last layer after the model's final norm (what HF's last entry holds)."""
    import torch

    from steerlab.methods import pca_center, pca_diff

    texts = [t for pair in pairs for t in pair]
    acts = steerlab.read(lm, texts, [layer], batch_size=128).acts[layer]
    norm = lm.model.get_decoder().norm
    with torch.no_grad():
        acts = norm(acts)
    pos, neg = acts[0::2], acts[1::2]
    return {"pca_diff": pca_diff(pos, neg)[0], "pca_center": pca_center(pos, neg)[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    args = parser.parse_args()
    lm = steerlab.load()
    pairs = load_pairs()[: args.pairs]
    layers = list(range(lm.num_layers))
    peers = {
        "pca_diff": repeng_directions(lm, pairs, layers, "pca_diff"),
        "pca_center": repeng_directions(lm, pairs, layers, "pca_center"),
        "mean_diff": sv_directions(lm, pairs, layers),
    }
    ours = {m: steerlab.extract(lm, pairs, method=m, chat=False, batch_size=128).directions for m in peers}
    last = layers[-1]
    normed = _last_layer_normed(lm, pairs, last)
    failed = False
    lines = [
        f"{len(pairs)} persona pairs, layers 0-{layers[-1]}, float32.",
        "",
        "| ours | peer | criterion | min over layers | median | worst layer | result (layers) |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for method, (peer, threshold, absolute) in CRITERIA.items():
        checked = layers[:-1] if peer == "repeng" else layers
        cos = cosines({k: ours[method][k] for k in checked}, {k: peers[method][k] for k in checked})
        values = [abs(c) for c in cos] if absolute else cos
        worst = min(range(len(values)), key=values.__getitem__)
        layers_text = f"0-{checked[-1]}"
        ok = min(values) >= threshold
        failed |= not ok
        name = "abs(cos)" if absolute else "cos"
        lines.append(
            f"| {method} | {peer} {method if peer == 'repeng' else 'mean'} | {name} >= {threshold} | {min(values):.6f} | "
            f"{sorted(values)[len(values) // 2]:.6f} | {checked[worst]} | {'pass' if ok else 'FAIL'} ({layers_text}) |"
        )
        signs = sum(1 for c in cos if c < 0)
        if absolute and signs:
            lines.append(
                f"|  | (sign: {signs} of {len(cos)} layers point opposite to the peer's) | | | | | |"
            )
    for method in ("pca_diff", "pca_center"):
        raw = abs(cosines({last: ours[method][last]}, {last: peers[method][last]})[0])
        fixed = abs(cosines({last: normed[method]}, {last: peers[method][last]})[0])
        lines.append(
            f"| {method} layer {last} | repeng (HF hidden_states[-1], final-normed) | reported | {raw:.6f} as read; "
            f"{fixed:.6f} with the final norm applied to ours | | | convention |"
        )
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
