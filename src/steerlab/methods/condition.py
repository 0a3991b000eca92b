"""Finding a condition: which layer, direction, threshold and comparison tell two sets of prompts apart.

:func:`find_condition` splits each set into a training part and a held-out part (seeded, per set). On the
training part it takes, per candidate layer, the difference of the class means of the prompt-mean hidden
states (the condition direction); on the held-out part it scores every prompt by the cosine with that
direction and searches the threshold and comparison that best separate the two sets (F1 for "should
fire", then accuracy), the idea of CAST's grid search over condition points. The layer with the best
held-out F1 wins (ties: accuracy, then the wider margin, then the earlier layer, which leaves more layers
after it to steer). Every layer's numbers are kept in ``diagnostics["per_layer"]``.

The math (:func:`best_threshold`, :func:`f1_accuracy`) is pure; only :func:`find_condition` reads the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from steerlab.engine.condition import COMPARISONS, Condition, cosine_scores
from steerlab.errors import DataError

if TYPE_CHECKING:
    from steerlab.models.handle import ModelHandle


@dataclass(frozen=True)
class ThresholdChoice:
    """The best threshold for one layer's held-out scores, and how well it separates them."""

    threshold: float
    comparison: str
    f1: float
    accuracy: float
    margin: float  # distance from the threshold to the nearest held-out score on either side


def f1_accuracy(fired: torch.Tensor, positive: torch.Tensor) -> tuple[float, float]:
    """F1 of ``fired`` against the ``positive`` labels (both bool ``(n,)``), and accuracy."""
    tp = int((fired & positive).sum())
    fp = int((fired & ~positive).sum())
    fn = int((~fired & positive).sum())
    f1 = 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
    accuracy = float((fired == positive).float().mean())
    return f1, accuracy


def best_threshold(
    scores: torch.Tensor, positive: torch.Tensor, comparisons: Sequence[str] = COMPARISONS
) -> ThresholdChoice:
    """Search thresholds (midpoints between sorted scores, and beyond both ends) and comparisons.

    The best choice maximises F1, then accuracy; among thresholds that tie, the one in the middle of the
    tied run is taken, so the threshold sits away from the nearest scores.
    """
    ordered = torch.sort(scores.double()).values
    cuts = [float(ordered[0]) - 1e-3]
    cuts += [float((ordered[i] + ordered[i + 1]) / 2) for i in range(len(ordered) - 1)]
    cuts.append(float(ordered[-1]) + 1e-3)
    best: ThresholdChoice | None = None
    for comparison in comparisons:
        results = []
        for cut in cuts:
            fired = scores.double() > cut if comparison == "greater" else scores.double() < cut
            results.append(f1_accuracy(fired, positive))
        top = max(results)
        tied = [i for i, r in enumerate(results) if r == top]
        run = _longest_run(tied)
        cut = cuts[run[len(run) // 2]]
        margin = float((scores.double() - cut).abs().min())
        choice = ThresholdChoice(cut, comparison, top[0], top[1], margin)
        if best is None or (choice.f1, choice.accuracy, choice.margin) > (
            best.f1,
            best.accuracy,
            best.margin,
        ):
            best = choice
    assert best is not None
    return best


def _longest_run(indices: list[int]) -> list[int]:
    """The longest run of consecutive integers in sorted ``indices``."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return max(runs, key=len)


def split(items: Sequence[str], holdout: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded split into (train, held out), at least one of each."""
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    n_held = min(max(1, math.ceil(holdout * len(items))), len(items) - 1)
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [items[i] for i in train], [items[i] for i in held]


def find_condition(
    lm: ModelHandle,
    positive_prompts: Sequence[str],
    negative_prompts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    holdout: float = 0.3,
    comparison: str | None = None,
    seed: int = 0,
    chat: bool = True,
    name: str = "",
    skip: int = 0,
    batch_size: int = 32,
) -> Condition:
    """A :class:`Condition` that fires on prompts like ``positive_prompts`` and not on ``negative_prompts``.

    ``layers`` limits the candidate layers (default: all; a condition gating a steering must read a layer
    no later than the first one steered, so pass e.g. ``range(0, 7)`` for a steering at layer 6);
    ``holdout`` is the fraction of each set kept for choosing the threshold; ``comparison`` fixes the
    comparison (default: whichever separates better); prompts are chat-formatted unless ``chat=False``,
    as ``lm.generate`` formats them; ``skip`` leaves each prompt's first tokens out of its mean (default
    0, CAST's pooling over the whole prompt: on SmolLM2 leaving the template header out separated held-out
    harmful prompts less well, 0.79 vs 0.95 at layer 1).
    """
    from steerlab.reader import read

    positive, negative = _texts(positive_prompts, "positive"), _texts(negative_prompts, "negative")
    if not 0 < holdout < 1:
        raise DataError(f"holdout must be a fraction between 0 and 1, got {holdout}")
    if comparison is not None and comparison not in COMPARISONS:
        raise DataError(f"comparison must be one of {', '.join(COMPARISONS)}, got {comparison!r}")
    candidates = sorted(
        {lm.anatomy.check_layer(int(x)) for x in (layers if layers is not None else range(lm.num_layers))}
    )
    if not candidates:
        raise DataError("no candidate layers")
    pos_train, pos_held = split(positive, holdout, seed)
    neg_train, neg_held = split(negative, holdout, seed + 1)
    texts = pos_train + neg_train + pos_held + neg_held
    formatted = [lm.chat(t) if chat else t for t in texts]
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise DataError(f"skip must be a non-negative int, got {skip!r}")
    acts = read(
        lm, formatted, candidates, position="mean", batch_size=batch_size, share_prefix=False, mean_skip=skip
    ).acts
    n_pt, n_nt, n_ph = len(pos_train), len(neg_train), len(pos_held)
    labels = torch.tensor([True] * n_ph + [False] * len(neg_held))
    comparisons = (comparison,) if comparison else COMPARISONS
    table: list[dict[str, Any]] = []
    best: tuple[tuple, int, torch.Tensor, ThresholdChoice] | None = None
    for layer in candidates:
        states = acts[layer].double()
        direction = states[:n_pt].mean(0) - states[n_pt : n_pt + n_nt].mean(0)
        if float(direction.norm()) == 0:
            raise DataError(
                f"layer {layer}: the two sets have identical mean states (are they the same prompts?)"
            )
        direction = direction / direction.norm()
        scores = cosine_scores(states[n_pt + n_nt :], direction)
        choice = best_threshold(scores, labels, comparisons)
        train_scores = cosine_scores(states[: n_pt + n_nt], direction)
        train_labels = torch.tensor([True] * n_pt + [False] * n_nt)
        fired = (
            train_scores > choice.threshold
            if choice.comparison == "greater"
            else train_scores < choice.threshold
        )
        train_f1, train_acc = f1_accuracy(fired, train_labels)
        table.append(
            {
                "layer": layer,
                "threshold": choice.threshold,
                "comparison": choice.comparison,
                "f1": choice.f1,
                "accuracy": choice.accuracy,
                "margin": choice.margin,
                "train_f1": train_f1,
                "train_accuracy": train_acc,
            }
        )
        key = (choice.f1, choice.accuracy, choice.margin, -layer)
        if best is None or key > best[0]:
            best = (key, layer, direction, choice)
    assert best is not None
    _, layer, direction, choice = best
    diagnostics = {
        "method": "mean difference of prompt-mean states; threshold by grid search on held-out prompts",
        "chosen_layer": layer,
        "held_out_f1": choice.f1,
        "held_out_accuracy": choice.accuracy,
        "split": {
            "train_positive": n_pt,
            "train_negative": n_nt,
            "held_out_positive": n_ph,
            "held_out_negative": len(neg_held),
            "seed": seed,
        },
        "chat": chat,
        "skip": skip,
        "per_layer": table,
    }
    return Condition(
        direction=direction.float(),
        layer=layer,
        threshold=choice.threshold,
        comparison=choice.comparison,
        model_id=lm.model_id,
        name=name,
        diagnostics=diagnostics,
        skip=skip,
    )


def _texts(prompts: Sequence[str], what: str) -> list[str]:
    if isinstance(prompts, str):
        raise DataError(f"{what}_prompts must be a list of prompts, not one string")
    items = list(prompts)
    if len(items) < 4:
        raise DataError(f"{what}_prompts needs at least 4 prompts (some are held out to pick the threshold)")
    if not all(isinstance(p, str) and p.strip() for p in items):
        raise DataError(f"{what}_prompts must be non-empty strings")
    return items
