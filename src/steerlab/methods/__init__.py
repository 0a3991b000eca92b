"""Extraction methods: pure functions from activations to a direction plus diagnostics.

``PAIR_METHODS`` (name -> ``fn(pos, neg) -> (direction, diagnostics)``) is what ``steerlab.extract``
looks up beyond its built-in streaming ``mean_diff``; model-level methods (``iti``, ``refusal``,
``learned``) have their own entry points, listed in :mod:`steerlab.methods.registry`.
"""

from steerlab.methods.diagnostics import separation
from steerlab.methods.iti import extract_iti
from steerlab.methods.learned import train_vector
from steerlab.methods.mean_diff import RunningMeanDiff, mean_diff
from steerlab.methods.pca import pca_center, pca_diff
from steerlab.methods.probe import probe
from steerlab.methods.refusal import ablation_steerings, addition_steering, extract_refusal, is_refusal
from steerlab.methods.registry import METHODS, PAIR_METHODS, extract_cached, run_model_method

__all__ = [
    "METHODS",
    "PAIR_METHODS",
    "RunningMeanDiff",
    "ablation_steerings",
    "addition_steering",
    "extract_cached",
    "extract_iti",
    "extract_refusal",
    "is_refusal",
    "mean_diff",
    "pca_center",
    "pca_diff",
    "probe",
    "run_model_method",
    "separation",
    "train_vector",
]
