"""The figures: effect vs strength, data efficiency, the KL vs effect frontier, and sweep heatmaps (PNG).

Each figure is built by a function that returns the matplotlib figure (so tests can read its axes,
ticks and colour scale) and saved by :func:`make_plots` / :func:`save_sweep_heatmap`. Conventions that
make them readable: the unadapted model is always drawn (a dashed line with its interval as a band,
or the centre of a heatmap's colour scale), intervals are drawn wherever the results have them, counts
and KL are written as plain numbers, and KL (never negative) has no axis below zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steerlab.errors import SteerlabError
from steerlab.evaluate.report.numbers import efficiency_curves

#: Metrics that cannot be negative: sequential colours from zero (the unadapted value) upwards.
NONNEGATIVE = ("kl",)
#: What the unadapted model scores on a metric when the sweep has no baseline row for it.
NEUTRAL_VALUE = {"kl": 0.0, "ppl_ratio": 1.0}
BASE_STYLE = {"color": "grey", "ls": "--", "lw": 1}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain(value: float, _pos: Any = None) -> str:
    """A tick label as a plain number (``0.001``, ``16``), never ``10^x``."""
    return f"{value:g}"


def make_plots(results: dict[str, Any], rows: dict[str, dict[str, Any]], folder: Path) -> dict[str, Path]:
    """Draw every figure the results allow into ``folder``; returns name -> PNG path."""
    plt = _pyplot()
    made: dict[str, Path] = {}
    figures = {
        "effect_vs_strength": effect_strength_figure(results),
        "data_efficiency": efficiency_figure(results, rows),
        "kl_vs_effect": frontier_figure(results, rows),
    }
    for name, fig in figures.items():
        if fig is not None:
            made[name] = _save(fig, folder / f"{name}.png")
            plt.close(fig)
    return made


def _interval(low: Any, high: Any, value: float) -> tuple[float, float] | None:
    """Distances below/above ``value`` for an error bar, or None when the interval is not recorded."""
    if isinstance(low, int | float) and isinstance(high, int | float):
        return max(value - low, 0.0), max(high - value, 0.0)
    return None


def _baseline_band(ax: Any, estimate: dict[str, Any] | None, label: str = "unadapted") -> None:
    """The unadapted model as a dashed line with its interval as a light band."""
    if not estimate or not isinstance(estimate.get("value"), int | float):
        return
    ax.axhline(estimate["value"], label=label, **BASE_STYLE)
    if isinstance(estimate.get("low"), int | float) and isinstance(estimate.get("high"), int | float):
        ax.axhspan(estimate["low"], estimate["high"], color="grey", alpha=0.12, lw=0)


def effect_strength_figure(results: dict[str, Any]) -> Any | None:
    """Effect vs strength per steering method and layer set (calibration cells), 95% intervals as bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drew = False
    base_drawn = False
    for m, r in results["main"].items():
        cal = (r.get("calibration") or {}).get("rows") or []
        base = next((c for c in cal if c.get("key") == "baseline"), None)
        if base and isinstance(base.get("effect"), float) and not base_drawn:
            _baseline_band(
                ax, {"value": base["effect"], "low": base.get("effect_low"), "high": base.get("effect_high")}
            )
            base_drawn = True
        for label in dict.fromkeys(c["layer_label"] for c in cal if c.get("key") != "baseline"):
            cells = sorted(
                (c for c in cal if c.get("layer_label") == label and c.get("key") != "baseline"),
                key=lambda c: c["strength"],
            )
            cells = [c for c in cells if isinstance(c.get("effect"), float)]
            bars = [_interval(c.get("effect_low"), c.get("effect_high"), c["effect"]) for c in cells]
            if base and isinstance(base.get("effect"), float):  # its interval is the band already drawn
                cells, bars = [{**base, "strength": 0.0}, *cells], [None, *bars]
            if len(cells) < 2:
                continue
            xs = [c["strength"] for c in cells]
            ys = [c["effect"] for c in cells]
            yerr = np.array([b or (0.0, 0.0) for b in bars]).T if any(bars) else None
            ax.errorbar(xs, ys, yerr=yerr, marker="o", capsize=3, label=f"{m} L{label}")
            drew = True
    if not drew:
        plt.close(fig)
        return None
    ax.xaxis.set_major_formatter(plain)
    ax.set_xlabel("strength (fraction of typical residual norm)")
    ax.set_ylabel("effect (calibration split, 95% CI)")
    ax.set_title("effect vs strength")
    ax.legend(fontsize=7)
    return fig


def efficiency_figure(results: dict[str, Any], rows: dict[str, dict[str, Any]]) -> Any | None:
    """Effect vs training-set size (mean over seeds, bars: their spread), the sizes as plain numbers."""
    curves = efficiency_curves(results)
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sizes: set[int] = set()
    for m, by_n in curves.items():
        ns = sorted(by_n)
        sizes.update(ns)
        means = [float(np.mean(by_n[n])) for n in ns]
        errs = [float(np.std(by_n[n], ddof=1)) if len(by_n[n]) > 1 else 0.0 for n in ns]
        ax.errorbar(ns, means, yerr=errs, marker="o", capsize=3, label=m)
    _baseline_band(ax, (rows.get("baseline") or {}).get("effect"))
    ax.set_xscale("log", base=2)
    ticks = sorted(sizes)
    ax.set_xticks(ticks, [plain(n) for n in ticks])
    ax.xaxis.set_minor_locator(_null_locator())
    if len(ticks) == 1:  # one size: a log axis needs a range around it
        ax.set_xlim(ticks[0] / 1.5, ticks[0] * 1.5)
    ax.set_xlabel("training examples")
    ax.set_ylabel("effect (eval slice; bars: sd over seeds)")
    ax.set_title("data efficiency")
    ax.legend(fontsize=7)
    return fig


def frontier_figure(results: dict[str, Any], rows: dict[str, dict[str, Any]]) -> Any:
    """KL on neutral prompts vs effect: calibration cells as dots, each method with its intervals."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in results["main"].values():
        for c in (r.get("calibration") or {}).get("rows") or []:
            if (
                isinstance(c.get("effect"), float)
                and isinstance(c.get("kl"), float)
                and c.get("key") != "baseline"
            ):
                ax.scatter(max(c["kl"], 0.0), c["effect"], s=12, alpha=0.4, color="tab:blue")
    for m, row in rows.items():
        effect, kl = row["effect"], max(float(row["kl"]), 0.0)
        xerr = _interval((row.get("kl_ci") or {}).get("low"), (row.get("kl_ci") or {}).get("high"), kl)
        yerr = _interval(effect.get("low"), effect.get("high"), effect["value"])
        ax.errorbar(
            kl,
            effect["value"],
            xerr=None if xerr is None else [[xerr[0]], [xerr[1]]],
            yerr=None if yerr is None else [[yerr[0]], [yerr[1]]],
            fmt="o",
            ms=6,
            capsize=3,
            label=m,
            clip_on=False,  # the unadapted model sits exactly on the KL axis' left edge (0)
        )
    ax.axvline(results["config"].get("max_kl", 0.1), color="grey", ls=":", label="KL budget")
    kl_axis(ax)
    ax.set_xlabel("mean KL on neutral prompts (nats, 95% CI)")
    ax.set_ylabel("effect (eval, 95% CI)")
    ax.set_title("KL vs effect frontier (small dots: calibration cells)")
    ax.legend(fontsize=7)
    return fig


def kl_axis(ax: Any, axis: str = "x") -> None:
    """A KL axis: from exactly 0 (the unadapted model), log-like above 0.001, plain-number ticks."""
    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    set_scale("symlog", linthresh=1e-3, linscale=0.5)
    if axis == "x":
        ax.set_xlim(left=0.0)
        ax.xaxis.set_major_formatter(plain)
    else:
        ax.set_ylim(bottom=0.0)
        ax.yaxis.set_major_formatter(plain)


def _null_locator() -> Any:
    from matplotlib.ticker import NullLocator

    return NullLocator()


# --------------------------------------------------------------------------------------------- sweeps


def sweep_heatmap(rows: Sequence[dict[str, Any]], metric: str, title: str = "") -> Any:
    """Layers (rows) × strengths (columns) of ``metric``, coloured relative to the unadapted model.

    Diverging colours centred on the unadapted value (the strength-0 row; 1 for a perplexity ratio),
    so the colour says which way and how far a cell moved; KL (never negative) is sequential from 0.
    Each cell shows its value and, where the sweep measured one, its 95% interval; ``*`` marks a cell
    whose interval excludes the unadapted value (an established change). Missing cells are blank.
    """
    from matplotlib.colors import CenteredNorm, Normalize

    plt = _pyplot()
    cells = [r for r in rows if r.get("key") != "baseline"]
    layer_labels = list(dict.fromkeys(r["layer_label"] for r in cells))
    strengths = sorted({r["strength"] for r in cells})
    if not layer_labels or not strengths:
        raise SteerlabError("heatmap: no sweep cells to plot")
    values = np.full((len(layer_labels), len(strengths)), np.nan)
    where: dict[tuple[int, int], dict[str, Any]] = {}
    for r in cells:
        value = r.get(metric)
        if isinstance(value, int | float):
            i, j = layer_labels.index(r["layer_label"]), strengths.index(r["strength"])
            values[i, j] = value
            where[i, j] = r
    base_row = next((r for r in rows if r.get("key") == "baseline"), {})
    centre = base_row.get(metric)
    if not isinstance(centre, int | float):
        centre = NEUTRAL_VALUE.get(metric)
    finite = values[np.isfinite(values)]
    if metric in NONNEGATIVE:
        top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        norm, cmap = Normalize(vmin=0.0, vmax=top), "Reds"
    elif centre is not None:
        span = float(np.max(np.abs(finite - centre))) if finite.size else 0.0
        norm, cmap = CenteredNorm(vcenter=float(centre), halfrange=span or 1.0), "RdBu_r"
    else:
        norm, cmap = Normalize(), "viridis"
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(strengths), 1.4 + 0.55 * len(layer_labels)))
    image = ax.imshow(values, aspect="auto", cmap=cmap, norm=norm)
    ax.set_xticks(range(len(strengths)), [plain(s) for s in strengths])
    ax.set_yticks(range(len(layer_labels)), layer_labels)
    ax.set_xlabel("strength")
    ax.set_ylabel("layers")
    for (i, j), r in where.items():
        ax.text(
            j,
            i,
            _cell_text(r, metric, centre),
            ha="center",
            va="center",
            fontsize=7,
            color=_ink(image, values[i, j]),
        )
    base_text = _base_text(base_row, metric, centre)
    bar = fig.colorbar(image, ax=ax, label=f"{metric} ({base_text})" if base_text else metric)
    if centre is not None:
        bar.ax.axhline(centre, color="black", lw=1.5)  # where the unadapted model sits on the scale
    if any("*" in t.get_text() for t in ax.texts):
        ax.set_xlabel("strength   (*: 95% interval excludes the unadapted value)")
    ax.set_title(title or metric, fontsize=10)
    return fig


def _cell_text(row: dict[str, Any], metric: str, centre: float | None) -> str:
    text = f"{row[metric]:.2g}"
    low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
    if isinstance(low, int | float) and isinstance(high, int | float):
        mark = "*" if centre is not None and not low <= centre <= high else ""
        text += f"{mark}\n[{low:.2g}, {high:.2g}]"
    return text


def _base_text(base_row: dict[str, Any], metric: str, centre: float | None) -> str:
    if centre is None:
        return ""
    text = f"unadapted {centre:.3g}"
    low, high = base_row.get(f"{metric}_low"), base_row.get(f"{metric}_high")
    if isinstance(low, int | float) and isinstance(high, int | float):
        text += f" [{low:.2g}, {high:.2g}]"
    return text


def _ink(image: Any, value: float) -> str:
    """Black on light cells, white on dark ones."""
    r, g, b, _ = image.cmap(image.norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def save_sweep_heatmap(
    rows: Sequence[dict[str, Any]], metric: str, path: str | Path, title: str = ""
) -> Path:
    """:func:`sweep_heatmap` saved as a PNG at ``path``."""
    fig = sweep_heatmap(rows, metric, title)
    out = _save(fig, Path(path))
    _pyplot().close(fig)
    return out


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
