"""Per-layer numbers that say how well a direction separates the two sides of the data."""

from __future__ import annotations

import torch


def separation(pos: torch.Tensor, neg: torch.Tensor, direction: torch.Tensor) -> dict[str, float]:
    """Projection statistics of both classes on ``direction``.

    ``d_prime``: gap between the class means of the projections over their pooled standard deviation.
    ``accuracy``: fraction of items on the correct side of the midpoint between the class means (the
    simplest classifier the direction defines). ``norm``: the raw direction's length.
    """
    norm = float(direction.norm())
    if norm == 0:
        return {"d_prime": 0.0, "accuracy": 0.5, "norm": 0.0}
    unit = direction / norm
    p, n = pos.float() @ unit, neg.float() @ unit
    pooled = torch.sqrt((p.var(unbiased=False) + n.var(unbiased=False)) / 2).item() if len(p) > 1 else 0.0
    gap = float(p.mean() - n.mean())
    mid = (p.mean() + n.mean()) / 2
    accuracy = float(((p > mid).sum() + (n <= mid).sum()) / (len(p) + len(n)))
    return {"d_prime": gap / pooled if pooled > 0 else float("inf"), "accuracy": accuracy, "norm": norm}
