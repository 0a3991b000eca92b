"""Extraction methods: pure functions from activations to a direction plus diagnostics."""

from steerlab.methods.diagnostics import separation
from steerlab.methods.mean_diff import RunningMeanDiff, mean_diff

__all__ = ["RunningMeanDiff", "mean_diff", "separation"]
