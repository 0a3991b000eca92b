"""Inference-Time Intervention (Li et al. 2023): steer a few attention heads, not the whole stream.

Per-head activations are read at the input of each block's attention output projection (site
``"head"``, width ``num_heads * head_dim``: the heads concatenated). Every head gets its own logistic
probe; the ``top_k`` heads with the best held-out accuracy over all layers are kept. Each kept head's
direction is its mass-mean shift ``mean(pos) - mean(neg)``, made unit length and scaled by ``sigma``, the
standard deviation of that head's activations along it, so ``unit="raw", strength=alpha`` reproduces
ITI's ``alpha * sigma * theta``. The vector records that as its default (:data:`ITI_ALPHA`, the paper's
alpha of 15, raw unit, added at every token of every layer with a kept head), so ``lm.steer(vector)``
applies ITI in the paper's own scale. Heads not kept are zero, and layers with no kept head are left out
of the vector. With ``unit="norm"`` the engine instead scales each layer's (multi-head) direction to
``strength`` times the typical norm of the head site there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from steerlab.errors import DataError
from steerlab.methods.pca import check_pairs
from steerlab.methods.probe import fit_logistic, heldout_split, score_logistic

if TYPE_CHECKING:
    from steerlab.models.handle import ModelHandle
    from steerlab.vector import SteeringVector

#: ITI's intervention strength in the paper's scale (Li et al. 2023 chose alpha = 15 for LLaMA-7B): each
#: kept head moves ``alpha`` standard deviations of its activations along its direction.
ITI_ALPHA = 15.0


def head_scores(
    pos: torch.Tensor, neg: torch.Tensor, num_heads: int, *, heldout: float = 0.25, seed: int = 0
) -> list[dict[str, float]]:
    """Held-out probe accuracy/AUC for every head of one layer (``(n, num_heads * head_dim)`` inputs)."""
    check_pairs(pos, neg, paired=False)
    width = pos.shape[1]
    if width % num_heads:
        raise DataError(f"width {width} is not divisible into {num_heads} heads")
    head_dim = width // num_heads
    x = torch.cat([pos, neg]).double().numpy()
    y = np.concatenate([np.ones(len(pos), dtype=int), np.zeros(len(neg), dtype=int)])
    train, held = heldout_split(len(pos), len(neg), heldout, seed)
    out = []
    for head in range(num_heads):
        cols = x[:, head * head_dim : (head + 1) * head_dim]
        if np.ptp(cols, axis=0).max() == 0:
            out.append({"accuracy": 0.5, "auc": 0.5})
            continue
        w, b = fit_logistic(cols[train], y[train])
        out.append(score_logistic(w, b, cols[held], y[held]))
    return out


def head_direction(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Unit mass-mean shift of one head and the std of all its activations along it."""
    shift = pos.double().mean(0) - neg.double().mean(0)
    norm = float(shift.norm())
    if norm == 0:
        return torch.zeros_like(shift).float(), 0.0
    unit = shift / norm
    sigma = float((torch.cat([pos, neg]).double() @ unit).std())
    return unit.float(), sigma


def iti_directions(
    pos: dict[int, torch.Tensor],
    neg: dict[int, torch.Tensor],
    num_heads: int,
    *,
    top_k: int = 12,
    heldout: float = 0.25,
    seed: int = 0,
) -> tuple[dict[int, torch.Tensor], dict[int, dict[str, Any]]]:
    """Pick the ``top_k`` heads over all layers and build the per-layer (mostly zero) directions."""
    if not pos:
        raise DataError("no layers to choose heads from")
    if top_k < 1:
        raise DataError(f"top_k must be at least 1, got {top_k}")
    scores = {
        layer: head_scores(pos[layer], neg[layer], num_heads, heldout=heldout, seed=seed) for layer in pos
    }
    ranked = sorted(
        (
            (s["accuracy"], s["auc"], layer, head)
            for layer, heads in scores.items()
            for head, s in enumerate(heads)
        ),
        key=lambda t: (-t[0], -(t[1] if t[1] == t[1] else 0.0), t[2], t[3]),
    )
    chosen = sorted((layer, head) for _, _, layer, head in ranked[:top_k])
    head_dim = next(iter(pos.values())).shape[1] // num_heads
    directions: dict[int, torch.Tensor] = {}
    diagnostics: dict[int, dict[str, Any]] = {}
    for layer, heads in scores.items():
        picked = [head for lyr, head in chosen if lyr == layer]
        accs = [h["accuracy"] for h in heads]
        diag: dict[str, Any] = {
            "heads_selected": len(picked),
            "best_head_accuracy": max(accs),
            "mean_head_accuracy": float(np.mean(accs)),
            "head_accuracy": accs,
            "selected": picked,
        }
        if picked:
            direction = torch.zeros(pos[layer].shape[1])
            sigmas = []
            for head in picked:
                cols = slice(head * head_dim, (head + 1) * head_dim)
                unit, sigma = head_direction(pos[layer][:, cols], neg[layer][:, cols])
                direction[cols] = unit * sigma
                sigmas.append(sigma)
            if float(direction.norm()) == 0:
                raise DataError(f"layer {layer}: the selected heads have identical activations on both sides")
            directions[layer] = direction
            diag["sigma"] = sigmas
            diag["norm"] = float(direction.norm())
        diagnostics[layer] = diag
    return directions, diagnostics


def extract_iti(
    lm: ModelHandle,
    data: Any,
    *,
    top_k: int = 12,
    layers: Any = None,
    position: Any = "last",
    chat: bool = True,
    heldout: float = 0.25,
    seed: int = 0,
    batch_size: int = 32,
    dtype: torch.dtype | None = None,
    cache: Any = None,
    progress: bool = False,
    notes: str = "",
) -> SteeringVector:
    """ITI vector (site ``"head"``) from contrast pairs, read through the one reader (or the cache)."""
    from steerlab.act_cache import cached_read
    from steerlab.data.contrast import contrast_texts, texts_hash
    from steerlab.engine.spec import parse_layers
    from steerlab.vector import SteeringVector

    num_heads = lm.anatomy.num_heads
    lm.anatomy.site_width("head")  # a clear ModelError when the head layout is unknown
    chosen = list(range(lm.num_layers)) if layers is None else list(parse_layers(layers))
    for layer in chosen:
        lm.anatomy.module(layer, "head")
    positive, negative = contrast_texts(lm, data, chat=chat)
    options = dict(
        site="head", position=position, batch_size=batch_size, progress=progress, dtype=dtype, cache=cache
    )
    pos_acts = cached_read(lm, positive, chosen, **options)
    neg_acts = cached_read(lm, negative, chosen, **options)
    directions, diagnostics = iti_directions(
        pos_acts.acts, neg_acts.acts, int(num_heads), top_k=top_k, heldout=heldout, seed=seed
    )
    norms = {k: (pos_acts.norms[k] + neg_acts.norms[k]) / 2 for k in directions if k in pos_acts.norms}
    return SteeringVector(
        directions=directions,
        model_id=lm.model_id,
        hidden_size=lm.hidden_size,
        site="head",
        method="iti",
        data_hash=texts_hash(positive, negative),
        norms={k: v for k, v in norms.items() if v > 0},
        notes=notes
        or (
            f"ITI: defaults add alpha={ITI_ALPHA:g} activation standard deviations along each kept head's "
            "direction (unit 'raw'; the paper's scale); pass another strength for another alpha. The paper's "
            "alpha is strong for small models (fluency can suffer): calibrate it within a KL budget"
        ),
        defaults={"op": "add", "unit": "raw", "strength": ITI_ALPHA, "layers": sorted(directions)},
        provenance={
            "pairs": len(positive),
            "position": str(position),
            "chat": chat,
            "top_k": top_k,
            "num_heads": int(num_heads),
            "head_dim": int(lm.anatomy.head_dim),
        },
        diagnostics={str(k): v for k, v in diagnostics.items()},
    )
