"""Extraction methods: pure functions from activations to a direction plus diagnostics.

``PAIR_METHODS`` (name -> ``fn(pos, neg) -> (direction, diagnostics)``) is what ``steerlab.extract``
looks up beyond its built-in streaming ``mean_diff``; model-level methods (``iti``, ``refusal``,
``learned``) have their own entry points, listed in :mod:`steerlab.methods.registry`.

Nothing is imported here: each name below is loaded from its module on first use, so ``import steerlab``
does not pay for probes, generation-based selection or optimisation code it may never run. Functions
named like their module (``mean_diff``, ``probe``) are imported from the module itself
(``from steerlab.methods.probe import probe``): a package attribute cannot be both.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "METHODS": "registry",
    "PAIR_METHODS": "registry",
    "run_model_method": "registry",
    "separation": "diagnostics",
    "RunningMeanDiff": "mean_diff",
    "pca_center": "pca",
    "pca_diff": "pca",
    "extract_iti": "iti",
    "train_vector": "learned",
    "ablation_steerings": "refusal",
    "addition_steering": "refusal",
    "extract_refusal": "refusal",
    "is_refusal": "refusal_text",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'steerlab.methods' has no attribute '{name}'")
    return getattr(importlib.import_module(f"steerlab.methods.{home}"), name)
