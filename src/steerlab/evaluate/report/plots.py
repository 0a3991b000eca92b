"""The report's figures: effect vs strength, data efficiency, and the KL vs effect frontier (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from steerlab.evaluate.report.numbers import efficiency_curves


def make_plots(results: dict[str, Any], rows: dict[str, dict[str, Any]], folder: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, Path] = {}
    main = results["main"]
    fig, ax = plt.subplots(figsize=(6, 4))
    drew = False
    for m, r in main.items():
        cal = (r.get("calibration") or {}).get("rows") or []
        base = next((c for c in cal if c.get("key") == "baseline"), None)
        for label in dict.fromkeys(c["layer_label"] for c in cal if c.get("key") != "baseline"):
            pts = sorted(
                (c["strength"], c["effect"])
                for c in cal
                if c.get("layer_label") == label
                and c.get("key") != "baseline"
                and isinstance(c.get("effect"), float)
            )
            if base and isinstance(base.get("effect"), float):
                pts = [(0.0, base["effect"]), *pts]
            if len(pts) > 1:
                ax.plot(*zip(*pts, strict=True), marker="o", label=f"{m} L{label}")
                drew = True
    if drew:
        ax.set_xlabel("strength (fraction of typical residual norm)")
        ax.set_ylabel("effect (calibration split)")
        ax.set_title("effect vs strength")
        ax.legend(fontsize=7)
        made["effect_vs_strength"] = _save(fig, folder / "effect_vs_strength.png")
    plt.close(fig)

    curves = efficiency_curves(results)
    if curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, by_n in curves.items():
            ns = sorted(by_n)
            means = [np.mean(by_n[n]) for n in ns]
            errs = [np.std(by_n[n]) for n in ns]
            ax.errorbar(ns, means, yerr=errs, marker="o", capsize=3, label=m)
        if "baseline" in rows:
            ax.axhline(rows["baseline"]["effect"]["value"], color="grey", ls="--", label="unadapted")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training examples")
        ax.set_ylabel("effect (eval slice)")
        ax.set_title("data efficiency")
        ax.legend(fontsize=7)
        made["data_efficiency"] = _save(fig, folder / "data_efficiency.png")
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in main.values():
        for c in (r.get("calibration") or {}).get("rows") or []:
            if (
                isinstance(c.get("effect"), float)
                and isinstance(c.get("kl"), float)
                and c.get("key") != "baseline"
            ):
                ax.scatter(c["kl"], c["effect"], s=12, alpha=0.4, color="tab:blue")
    for m, row in rows.items():
        ax.scatter(row["kl"], row["effect"]["value"], s=40, label=m)
    ax.axvline(results["config"].get("max_kl", 0.1), color="grey", ls=":", label="KL budget")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel("mean KL on neutral prompts (nats)")
    ax.set_ylabel("effect")
    ax.set_title("KL vs effect frontier (small dots: calibration cells)")
    ax.legend(fontsize=7)
    made["kl_vs_effect"] = _save(fig, folder / "kl_vs_effect.png")
    plt.close(fig)
    return made


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
