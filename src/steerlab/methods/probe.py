"""Linear probe: the normal of a logistic-regression boundary between the two sides.

A probe answers "is the concept linearly readable here?" with a number that can fail: accuracy and
ROC AUC on held-out items the probe never saw. We fit on standardised features (lbfgs converges badly
on raw residual streams, whose few huge dimensions dominate) and map the weights back to activation
space, ``w_raw = w_std / scale``, which is the same decision boundary. The steering direction is the
probe fitted on all items, oriented towards the positive side and scaled to the class gap along it
(as for the PCA methods). When both sides have the same count, items are treated as pairs and a
pair's two sides go to the same split, so a held-out score never rewards memorising a shared prompt.
"""

from __future__ import annotations

import numpy as np
import torch

from steerlab.errors import DataError
from steerlab.methods.diagnostics import separation
from steerlab.methods.pca import check_pairs


def _sklearn():
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError(
            "the 'probe' and 'iti' methods need scikit-learn: pip install 'steerlab[probe]'"
        ) from exc
    return LogisticRegression, roc_auc_score


def heldout_split(n_pos: int, n_neg: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (over ``cat(pos, neg)``) of held-out items: pairs stay together when counts match."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"held-out fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)

    def pick(n: int) -> np.ndarray:
        k = min(max(round(n * fraction), 1), n - 1)
        mask = np.zeros(n, dtype=bool)
        mask[rng.permutation(n)[:k]] = True
        return mask

    if n_pos == n_neg:
        mask = pick(n_pos)
        pos_mask, neg_mask = mask, mask
    else:
        pos_mask, neg_mask = pick(n_pos), pick(n_neg)
    held = np.concatenate([pos_mask, neg_mask])
    return ~held, held


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, C: float = 1.0, max_iter: int = 2000
) -> tuple[np.ndarray, float]:
    """Logistic regression on standardised ``x``; returns raw-space weights and intercept."""
    LogisticRegression, _ = _sklearn()
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=C, max_iter=max_iter)
    model.fit((x - mean) / scale, y)
    w = model.coef_[0] / scale
    b = float(model.intercept_[0] - w @ mean)
    return w, b


def score_logistic(w: np.ndarray, b: float, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy and ROC AUC of the boundary ``w.x + b`` on ``(x, y)``."""
    _, roc_auc_score = _sklearn()
    logits = x @ w + b
    accuracy = float(((logits > 0) == (y == 1)).mean())
    auc = float(roc_auc_score(y, logits)) if len(set(y.tolist())) == 2 else float("nan")
    return {"accuracy": accuracy, "auc": auc}


def probe(
    pos: torch.Tensor,
    neg: torch.Tensor,
    *,
    heldout: float = 0.25,
    seed: int = 0,
    C: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Probe direction plus held-out accuracy/AUC (``heldout_accuracy``, ``heldout_auc``)."""
    check_pairs(pos, neg, paired=False)
    x = torch.cat([pos, neg]).double().numpy()
    y = np.concatenate([np.ones(len(pos), dtype=int), np.zeros(len(neg), dtype=int)])
    if np.ptp(x, axis=0).max() == 0:
        raise DataError("all activations are identical: there is nothing for a probe to separate")
    train, held = heldout_split(len(pos), len(neg), heldout, seed)
    w, b = fit_logistic(x[train], y[train], C=C)
    scores = score_logistic(w, b, x[held], y[held])
    train_scores = score_logistic(w, b, x[train], y[train])
    w_all, _ = fit_logistic(x, y, C=C)
    norm = float(np.linalg.norm(w_all))
    if norm == 0 or not np.isfinite(norm):
        raise DataError("the probe found no separating direction (all weights are zero)")
    unit = torch.from_numpy(w_all / norm)
    gap = float((pos.double().mean(0) - neg.double().mean(0)) @ unit)
    direction = (unit * gap).float() if gap != 0 else unit.float()
    return direction, {
        **separation(pos, neg, direction),
        "heldout_accuracy": scores["accuracy"],
        "heldout_auc": scores["auc"],
        "train_accuracy": train_scores["accuracy"],
        "heldout_n": int(held.sum()),
    }
