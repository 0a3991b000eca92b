"""The report's numbers: per-method rows relative to the baseline, efficiency curves, seed spread.

Pure functions of the results document (``results.json``); nothing here formats text.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from steerlab.evaluate.metrics import bootstrap, proportion


def value(result: dict[str, Any], split: str = "eval") -> float:
    """The headline effect of one method's result on ``split``."""
    return float(result[split]["estimate"]["value"])


def derive(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-method numbers relative to the baseline (gains, ratios, wrong-way fractions)."""
    main = results["main"]
    base = main.get("baseline")
    rows: dict[str, dict[str, Any]] = {}
    for name, r in main.items():
        row: dict[str, Any] = {"family": r.get("family")}
        row["effect"] = r["eval"]["estimate"]
        row["heldout"] = r["heldout"]["estimate"]
        if base is not None:
            gain = value(r) - value(base)
            hgain = value(r, "heldout") - value(base, "heldout")
            row["gain"], row["heldout_gain"] = gain, hgain
            row["generalisation_ratio"] = None  # only for an established gain (below)
            a, b = np.array(r["eval"]["per_example"]), np.array(base["eval"]["per_example"])
            if a.shape == b.shape and name != "baseline":
                diff = a - b
                row["wrong_way_fraction"] = float((diff < -1e-9).mean())
                row["wrong_way_ci"] = proportion(diff < -1e-9).as_dict() if diff.size else None
                row["moved_fraction"] = float((np.abs(diff) > 1e-9).mean())
                row["gain_ci"] = bootstrap(diff).as_dict()
                if row["gain_ci"]["low"] > 0:  # a ratio over a gain that may be zero is noise
                    row["generalisation_ratio"] = hgain / gain
            if r.get("ppl") and base.get("ppl"):
                row["ppl_ratio"] = r["ppl"] / base["ppl"]
            if r.get("capability") and base.get("capability"):
                row["capability_change"] = r["capability"]["accuracy"] - base["capability"]["accuracy"]
            if r.get("tokens_per_second") and r.get("tokens_per_second_unadapted"):
                # measured back to back in the same job (older results: against the baseline's job)
                row["speed_ratio"] = r["tokens_per_second"] / r["tokens_per_second_unadapted"]
            elif r.get("tokens_per_second") and base.get("tokens_per_second"):
                row["speed_ratio"] = r["tokens_per_second"] / base["tokens_per_second"]
        row["kl"] = r["kl"]["mean"]
        row["kl_ci"] = r["kl"].get("estimate")  # bootstrap over neutral prompts (absent in older folders)
        row["build_seconds"] = r["cost"]["seconds"]
        row["forward_passes"] = r["cost"]["forward_passes"]
        row["backward_passes"] = r["cost"]["backward_passes"]
        row["extra_prompt_tokens"] = r.get("extra_prompt_tokens")
        row["reversible"] = r["reversibility"]["passed"]
        row["within_budget"] = (r.get("calibration") or {}).get("within_budget")
        row["setting"] = r.get("settings")
        slopes = (r.get("calibration") or {}).get("slopes")
        if slopes:
            row["slope_wrong_way_fraction"] = slopes["wrong_way_fraction"]
        rows[name] = row
    return rows


def efficiency_curves(results: dict[str, Any]) -> dict[str, dict[int, list[float]]]:
    """Effect by method and training-set size, one value per seed."""
    curves: dict[str, dict[int, list[float]]] = {}
    for r in results.get("efficiency", {}).values():
        curves.setdefault(r["method"], {}).setdefault(int(r["n"]), []).append(float(r["effect"]))
    return curves


def seed_spread(curves: dict[str, dict[int, list[float]]]) -> dict[str, dict[str, float]]:
    """Standard deviation over seeds at each method's largest training-set size."""
    out = {}
    for method, by_n in curves.items():
        n = max(by_n)
        values = by_n[n]
        out[method] = {
            "n": n,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "seeds": len(values),
        }
    return out


def ci_separated(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two intervals do not overlap (a difference established at this sample size)."""
    return a["low"] > b["high"] or b["low"] > a["high"]
