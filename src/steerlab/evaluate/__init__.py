"""Measure what an adaptation does: effect, side effects, cost, reversibility; sweeps, calibration, the arena.

Pure metric functions are in :mod:`steerlab.evaluate.metrics`; model-dependent measurement in
:mod:`~steerlab.evaluate.measure`; the comparison of prompting, steering and LoRA in
:mod:`~steerlab.evaluate.arena`. Submodules import heavy optional packages (peft, matplotlib, Ray,
sentence embeddings) only when used.
"""

from steerlab.evaluate.metrics import (
    Estimate,
    ab_match_probability,
    accuracy_change,
    auc,
    bootstrap,
    kl_divergence,
    perplexity,
    proportion,
    slopes,
    wilson_interval,
    wrong_way_fraction,
)

__all__ = [
    "Estimate",
    "ab_match_probability",
    "accuracy_change",
    "auc",
    "bootstrap",
    "kl_divergence",
    "perplexity",
    "proportion",
    "slopes",
    "wilson_interval",
    "wrong_way_fraction",
]
