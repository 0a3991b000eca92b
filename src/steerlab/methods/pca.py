"""PCA directions (RepE / repeng): the main axis along which contrast pairs differ.

``pca_diff`` takes the first principal component of the per-pair differences ``pos_i - neg_i``;
``pca_center`` that of both sides after subtracting each pair's midpoint. Like repeng (scikit-learn's
``PCA``), ``pca_diff`` centres the differences before finding the axis, so it is the axis along which
pairs differ *most variably*, not the mean difference; on data with one clear concept the two agree.
A principal axis has no sign, so we orient it so that the positive side projects higher on average.

The returned direction is scaled to the class gap along it (``(mean(pos) - mean(neg)) . u``) rather
than left at unit length, so a raw-unit strength of 1 means "move by the gap", the same meaning it has
for ``mean_diff``; a norm-unit strength ignores the length anyway.
"""

from __future__ import annotations

import math

import torch

from steerlab.errors import DataError
from steerlab.methods.diagnostics import separation


def check_pairs(pos: torch.Tensor, neg: torch.Tensor, *, paired: bool) -> None:
    """Refuse activations no direction can be computed from, naming what was found."""
    if pos.dim() != 2 or neg.dim() != 2:
        raise DataError(
            f"expected (n, W) activations per side, got shapes {tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    if pos.shape[1] != neg.shape[1]:
        raise DataError(f"the two sides have different widths: {pos.shape[1]} and {neg.shape[1]}")
    if pos.shape[0] < 2 or neg.shape[0] < 2:
        raise DataError(
            f"need at least 2 examples per side, got {pos.shape[0]} positive and {neg.shape[0]} negative"
        )
    if paired and pos.shape[0] != neg.shape[0]:
        raise DataError(
            f"this method works on pairs: both sides need the same count, got {pos.shape[0]} and {neg.shape[0]}"
        )
    if not (torch.isfinite(pos).all() and torch.isfinite(neg).all()):
        raise DataError("activations hold NaN or inf values")


def first_component(x: torch.Tensor, *, center: bool) -> tuple[torch.Tensor, float]:
    """Unit first principal axis of the rows of ``x`` (float64) and its explained-variance ratio."""
    x = x.double()
    if center:
        x = x - x.mean(0, keepdim=True)
    # The top eigenvector of the smaller Gram matrix (n x n, or W x W when n > W) gives the same axis
    # as an SVD at a fraction of the cost (~5x faster for 128 x 576): this runs once per layer.
    small = x.shape[0] <= x.shape[1]
    gram = x @ x.T if small else x.T @ x
    total = float(torch.diagonal(gram).sum())
    if total <= 0 or not math.isfinite(total):
        raise DataError("all contrast differences are zero: the two sides have identical activations")
    values, vectors = torch.linalg.eigh(gram)
    top = vectors[:, -1]
    axis = x.T @ top if small else top
    return axis / axis.norm(), float(values[-1]) / total


def _orient(
    axis: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sign so the positive side projects higher; length = the class gap along the axis."""
    gap = float((pos.double().mean(0) - neg.double().mean(0)) @ axis)
    if gap == 0.0:
        raise DataError(
            "the class means coincide along the principal axis: the data has no contrast to orient it"
        )
    # axis * gap flips a wrongly signed axis and sets the length to |gap| in one step.
    direction = (axis * gap).float()
    mean_diff = (pos.double().mean(0) - neg.double().mean(0)).float()
    cos = float(torch.nn.functional.cosine_similarity(direction, mean_diff, dim=0))
    return direction, {"cos_mean_diff": cos}


def pca_diff(
    pos: torch.Tensor, neg: torch.Tensor, *, center: bool = True
) -> tuple[torch.Tensor, dict[str, float]]:
    """First principal axis of paired differences (repeng's ``pca_diff``); rows of ``pos``/``neg`` are pairs."""
    check_pairs(pos, neg, paired=True)
    axis, ratio = first_component(pos.double() - neg.double(), center=center)
    direction, extra = _orient(axis, pos, neg)
    return direction, {**separation(pos, neg, direction), "explained_variance": ratio, **extra}


def pca_center(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """First principal axis of both sides after removing each pair's midpoint (repeng's ``pca_center``)."""
    check_pairs(pos, neg, paired=True)
    center = (pos.double() + neg.double()) / 2
    stacked = torch.cat([pos.double() - center, neg.double() - center])
    axis, ratio = first_component(stacked, center=True)
    direction, extra = _orient(axis, pos, neg)
    return direction, {**separation(pos, neg, direction), "explained_variance": ratio, **extra}
