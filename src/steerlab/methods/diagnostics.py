"""Per-layer numbers that say how well a direction separates the two sides of the data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from steerlab.errors import DataError


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


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count half).

    The one AUC of the package (probes, concept scorers and reports use it), computed by scikit-learn
    (imported here, on use: the ``probe`` extra). Labels of one class only have no AUC: a clear error.
    """
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        raise DataError("auc: need both positive and negative labels")
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("ROC AUC needs scikit-learn: pip install 'steerlab[probe]'") from exc
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)))
