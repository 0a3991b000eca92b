"""Per-layer diagnostics as a table and a PNG: where along the depth does the concept live?

Both views read the same numbers: ``vector.diagnostics[str(layer)]`` dicts written by the methods
(separation d', midpoint accuracy, norms, explained variance, probe accuracy/AUC, heads selected).
Only scalar entries are shown; lists (per-head accuracies, loss curves) stay in the vector file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerlab.errors import DataError

if TYPE_CHECKING:
    from steerlab.vector import SteeringVector

#: Preferred column order; other scalar keys follow alphabetically.
ORDER = (
    "d_prime",
    "accuracy",
    "heldout_accuracy",
    "heldout_auc",
    "explained_variance",
    "cos_mean_diff",
    "heads_selected",
    "best_head_accuracy",
    "norm",
)
#: What each column means, for the table legend.
LEGEND = {
    "d_prime": "class gap along the direction / pooled std",
    "accuracy": "items on the right side of the class midpoint",
    "heldout_accuracy": "probe accuracy on held-out items",
    "heldout_auc": "probe ROC AUC on held-out items",
    "explained_variance": "share of variance on the first principal axis",
    "cos_mean_diff": "cosine with the mean difference",
    "norm": "length of the raw direction",
}


def layer_rows(diagnostics: dict[str, Any]) -> tuple[list[int], list[str], dict[int, dict[str, float]]]:
    """Layers (sorted), scalar columns (ordered) and their values, from a vector's diagnostics."""
    rows: dict[int, dict[str, float]] = {}
    for key, value in diagnostics.items():
        if not (isinstance(key, str) and key.isdigit() and isinstance(value, dict)):
            continue
        scalars = {
            k: float(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if scalars:
            rows[int(key)] = scalars
    names = {k for r in rows.values() for k in r}
    columns = [c for c in ORDER if c in names] + sorted(names - set(ORDER))
    return sorted(rows), columns, rows


def table(vector: SteeringVector, max_columns: int = 7) -> str:
    """A compact fixed-width table, one line per layer."""
    layers, columns, rows = layer_rows(vector.diagnostics)
    if not layers:
        return "(no per-layer diagnostics)"
    columns = columns[:max_columns]
    width = max(9, *(len(c) for c in columns))
    head = "layer " + " ".join(f"{c:>{width}}" for c in columns)
    lines = [head, "-" * len(head)]
    for layer in layers:
        cells = []
        for c in columns:
            v = rows[layer].get(c)
            cells.append(f"{'-':>{width}}" if v is None else f"{_fmt(v):>{width}}")
        mark = "*" if layer in vector.directions else " "
        lines.append(f"{layer:>4}{mark} " + " ".join(cells))
    lines.append("(* = layer has a direction in the vector)")
    return "\n".join(lines)


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "inf"
    if math.isnan(v):
        return "nan"
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.2e}"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def plot(vector: SteeringVector, path: str | Path, columns: list[str] | None = None) -> Path:
    """Save one small panel per diagnostic (x = layer) as a PNG; returns the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError("plotting needs matplotlib: pip install 'steerlab[plot]'") from exc
    layers, available, rows = layer_rows(vector.diagnostics)
    if not layers:
        raise DataError("this vector has no per-layer diagnostics to plot")
    chosen = [c for c in (columns or available[:6]) if c in available]
    if not chosen:
        raise DataError(f"none of the columns {columns} are in the diagnostics; available: {available}")
    path = Path(path)
    cols = min(3, len(chosen))
    nrows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.8 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, chosen, strict=False):
        xs = [layer for layer in layers if name in rows[layer] and math.isfinite(rows[layer][name])]
        ax.plot(xs, [rows[x][name] for x in xs], marker="o", markersize=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("layer", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen) :]:
        ax.axis("off")
    fig.suptitle(f"{vector.method} on {vector.model_id or 'model'} ({vector.site})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
