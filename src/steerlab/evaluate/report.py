"""The arena report: one table of measured criteria per method, plots, and a plain verdict per criterion.

Written to a folder: ``results.json`` (everything measured), ``report.md`` and a self-contained
``index.html`` (plots embedded as base64 PNG; the PNGs are also saved beside it). Verdicts are computed
from the numbers with fixed rules (see docs/criteria/) and say who wins even when it is not steering;
when intervals overlap they say the difference is not established.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from steerlab.interop.atomic import atomic_write

CRITERIA = (
    "effect",
    "reliability",
    "generalisation",
    "specificity",
    "computational efficiency",
    "data efficiency",
    "composability",
    "usability",
    "reversibility",
)


def _num(x: Any, fmt: str = ".3f") -> str:
    return (
        format(x, fmt) if isinstance(x, int | float) and not (isinstance(x, float) and math.isnan(x)) else "–"
    )


def _est(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    return f"{_num(d['value'])} [{_num(d['low'])}, {_num(d['high'])}]"


def _value(result: dict[str, Any], split: str = "eval") -> float:
    return float(result[split]["estimate"]["value"])


# ------------------------------------------------------------------------------------------- derived


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
            gain = _value(r) - _value(base)
            hgain = _value(r, "heldout") - _value(base, "heldout")
            row["gain"], row["heldout_gain"] = gain, hgain
            row["generalisation_ratio"] = None  # only for an established gain (below)
            a, b = np.array(r["eval"]["per_example"]), np.array(base["eval"]["per_example"])
            if a.shape == b.shape and name != "baseline":
                diff = a - b
                row["wrong_way_fraction"] = float((diff < -1e-9).mean())
                row["moved_fraction"] = float((np.abs(diff) > 1e-9).mean())
                row["gain_ci"] = _paired_ci(diff)
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


def _paired_ci(diff: np.ndarray) -> dict[str, float]:
    from steerlab.evaluate.metrics import bootstrap

    return bootstrap(diff).as_dict()


def _efficiency_curves(results: dict[str, Any]) -> dict[str, dict[int, list[float]]]:
    curves: dict[str, dict[int, list[float]]] = {}
    for r in results.get("efficiency", {}).values():
        curves.setdefault(r["method"], {}).setdefault(int(r["n"]), []).append(float(r["effect"]))
    return curves


def _seed_spread(curves: dict[str, dict[int, list[float]]]) -> dict[str, dict[str, float]]:
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


# ------------------------------------------------------------------------------------------- verdicts


def _ci_separated(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["low"] > b["high"] or b["low"] > a["high"]


def verdicts(results: dict[str, Any], rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    """One plain-language sentence or two per criterion, from fixed rules on the measured numbers."""
    task = results["task"]
    out: dict[str, str] = {}
    adapted = {m: r for m, r in rows.items() if m != "baseline"}
    if not adapted or "baseline" not in rows:
        return {c: "not enough methods ran to compare" for c in CRITERIA}
    base = rows["baseline"]
    best = max(adapted, key=lambda m: adapted[m]["effect"]["value"])
    b = adapted[best]
    sep = _ci_separated(b["effect"], base["effect"])
    families = {m: r["family"] for m, r in rows.items()}
    steer = [m for m in adapted if families[m] == "steering"]
    best_steer = max(steer, key=lambda m: adapted[m]["effect"]["value"]) if steer else None
    chance = task.get("chance")
    text = (
        f"{best} ({families[best]}) has the largest effect: {_est(b['effect'])} vs {_est(base['effect'])} unadapted"
        + ("" if sep else " — but the intervals overlap, so the gain is not established at this sample size")
        + "."
    )
    if families[best] == "prompting":
        text += " Prompting wins on effect here."
    elif best_steer and families[best] != "steering":
        text += f" The best steering method ({best_steer}) reaches {_est(adapted[best_steer]['effect'])}."
    if best_steer and "prompting" in adapted and families[best] != "prompting":
        p = adapted["prompting"]["effect"]
        text += f" Prompting reaches {_est(p)}."
    if chance is not None:
        near = [m for m, r in rows.items() if r["effect"]["low"] <= chance <= r["effect"]["high"]]
        if near:
            text += f" Intervals that include chance ({chance}): {', '.join(near)} — no reliable behaviour change there."
    out["effect"] = text

    wrong = {
        m: r.get("wrong_way_fraction") for m, r in adapted.items() if r.get("wrong_way_fraction") is not None
    }
    spread = _seed_spread(_efficiency_curves(results))
    parts = []
    if wrong:
        least = min(wrong, key=wrong.get)
        parts.append(
            f"fewest examples moved the wrong way vs unadapted: {least} ({wrong[least]:.0%}); "
            + ", ".join(f"{m} {w:.0%}" for m, w in wrong.items())
        )
    if spread:
        parts.append(
            "spread across seeds at the largest data size: "
            + ", ".join(f"{m} sd {s['std']:.3f} ({s['seeds']} seeds)" for m, s in spread.items())
        )
    out["reliability"] = ("; ".join(parts) + ".") if parts else "not measured."

    gen = {
        m: r.get("generalisation_ratio")
        for m, r in adapted.items()
        if r.get("generalisation_ratio") is not None and r.get("gain", 0) > 0
    }
    if gen:
        top = max(gen, key=gen.get)
        ratios = ", ".join(f"{m} {g:.2f}×" for m, g in gen.items())
        if gen[top] <= 0:
            out["generalisation"] = (
                f"no method with an established in-distribution gain kept any of it on the held-out family "
                f"({task.get('heldout_name')}): held-out gain / eval gain {ratios}."
            )
        else:
            out["generalisation"] = (
                f"on the held-out family ({task.get('heldout_name')}) {top} keeps the largest share of its "
                f"in-distribution gain ({gen[top]:.2f}×); {ratios}."
            )
    else:
        out["generalisation"] = (
            "no method had an established in-distribution gain (paired 95% interval above zero), so "
            "transfer to the held-out family cannot be judged; the held-out effects are in the table."
        )

    kl = {m: r["kl"] for m, r in adapted.items()}
    ppl = {m: r.get("ppl_ratio") for m, r in adapted.items() if r.get("ppl_ratio") is not None}
    calm = min(kl, key=kl.get)
    spec = f"lowest KL on neutral prompts: {calm} ({kl[calm]:.3f} nats); " + ", ".join(
        f"{m} {v:.3f}" for m, v in kl.items()
    )
    if ppl:
        spec += "; perplexity ratio of its text under the unadapted model: " + ", ".join(
            f"{m} {v:.2f}" for m, v in ppl.items()
        )
    caps = {
        m: r.get("capability_change") for m, r in adapted.items() if r.get("capability_change") is not None
    }
    if caps:
        spec += "; capability accuracy change: " + ", ".join(f"{m} {v:+.3f}" for m, v in caps.items())
    out["specificity"] = spec + "."

    build = {m: r["build_seconds"] for m, r in adapted.items()}
    speed = {m: r.get("speed_ratio") for m, r in adapted.items() if r.get("speed_ratio")}
    cheapest = min(build, key=build.get)
    comp = f"cheapest to build: {cheapest} ({build[cheapest]:.1f}s); " + ", ".join(
        f"{m} {s:.1f}s" for m, s in build.items()
    )
    if speed:
        comp += "; generation speed vs unadapted: " + ", ".join(f"{m} {v:.2f}×" for m, v in speed.items())
    extra = {m: r.get("extra_prompt_tokens") for m, r in adapted.items() if r.get("extra_prompt_tokens")}
    if extra:
        comp += "; extra prompt tokens per request: " + ", ".join(f"{m} +{v}" for m, v in extra.items())
    out["computational efficiency"] = comp + "."

    curves = _efficiency_curves(results)
    if curves:
        desc = []
        for m, by_n in curves.items():
            ns = sorted(by_n)
            desc.append(f"{m}: " + ", ".join(f"n={n}: {np.mean(by_n[n]):.3f}" for n in ns))
        out["data efficiency"] = "effect by training-set size (mean over seeds) — " + "; ".join(desc) + "."
    else:
        out["data efficiency"] = "not measured."

    compose = results.get("compose") or {}
    singles = {tuple(v["parts"]): v["effect"] for k, v in (compose.get("_single") or {}).items()}
    combos = {k: v for k, v in compose.items() if k != "_single"}
    if combos and singles:
        lines = []
        for v in combos.values():
            alone = [singles.get((p,)) for p in v["parts"]]
            known = [a for a in alone if a is not None]
            if known:
                best_alone = max(known)
                word = (
                    "adds to"
                    if v["effect"] > best_alone + 0.02
                    else ("interferes with" if v["effect"] < best_alone - 0.02 else "matches")
                )
                lines.append(
                    f"{' + '.join(v['parts'])}: {v['effect']:.3f} together vs best alone {best_alone:.3f} ({word} the best single)"
                )
        out["composability"] = "; ".join(lines) + "." if lines else "not measured."
    else:
        out["composability"] = "not measured."

    use = []
    for m, r in adapted.items():
        fam = r["family"]
        if fam == "prompting":
            use.append(f"{m}: write one instruction and pick examples; nothing to train or tune")
        elif fam == "steering":
            s = r.get("setting") or {}
            cells = len((results["main"][m].get("calibration") or {}).get("rows", []))
            use.append(
                f"{m}: layers {s.get('layers')} and strength {s.get('strength')} chosen automatically ({cells} calibration cells)"
            )
        elif fam == "lora":
            use.append(
                f"{m}: rank, learning rate and epochs to set; needs gradients and completions to train on"
            )
    out["usability"] = "; ".join(use) + "."

    rev = {m: r["reversible"] for m, r in adapted.items()}
    bad = [m for m, ok in rev.items() if not ok]
    txt = (
        "all methods restored bit-identical logits, weights and hooks after removal"
        if not bad
        else f"NOT exactly reversible: {', '.join(bad)}"
    )
    lora = results["main"].get("lora", {}).get("merge_round_trip_max_abs_error")
    if lora is not None:
        txt += f"; LoRA merged into the weights and unmerged again leaves a max weight error of {lora:.2e} (unmerged use is exact)"
    out["reversibility"] = txt + "."
    return out


# ----------------------------------------------------------------------------------------------- plots


def _plots(results: dict[str, Any], rows: dict[str, dict[str, Any]], folder: Path) -> dict[str, Path]:
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

    curves = _efficiency_curves(results)
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


# ---------------------------------------------------------------------------------------------- writing


COLUMNS = (
    ("effect", "effect (eval) [95% CI]"),
    ("gain", "gain vs unadapted"),
    ("heldout", "held-out effect"),
    ("generalisation_ratio", "held-out gain / eval gain"),
    ("wrong_way_fraction", "wrong-way fraction"),
    ("kl", "KL neutral (nats)"),
    ("ppl_ratio", "perplexity ratio"),
    ("capability_change", "capability Δacc"),
    ("build_seconds", "build s"),
    ("forward_passes", "fwd passes"),
    ("backward_passes", "bwd passes"),
    ("speed_ratio", "tok/s vs unadapted"),
    ("extra_prompt_tokens", "extra prompt tokens"),
    ("reversible", "reversible"),
)


def _cell(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    if isinstance(v, dict):
        return _est(v)
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return _num(v)


def table_md(rows: dict[str, dict[str, Any]]) -> str:
    head = "| method | family | " + " | ".join(label for _, label in COLUMNS) + " |"
    sep = "|" + "---|" * (len(COLUMNS) + 2)
    body = [
        f"| {m} | {r['family']} | " + " | ".join(_cell(r, k) for k, _ in COLUMNS) + " |"
        for m, r in rows.items()
    ]
    return "\n".join([head, sep, *body])


def markdown(
    results: dict[str, Any], rows: dict[str, dict[str, Any]], verdict: dict[str, str], plots: dict[str, Path]
) -> str:
    task = results["task"]
    lines = [
        f"# steerlab compare: {task['name']} ({task['kind']})",
        "",
        f"Model `{results.get('model')}`; executor {results.get('executor')}; wall time {results.get('wall_seconds', 0):.0f} s.",
        f"Training pool: {task['train_pairs']} pairs / {task['lora_examples']} completions / {task['shots']} shots; "
        f"evaluation: {task['eval']} items; held-out: {task['heldout']} ({task['heldout_name']}).",
        "",
        "## Verdicts",
        "",
    ]
    lines += [f"- **{c}**: {verdict.get(c, 'not measured.')}" for c in CRITERIA]
    lines += ["", "## Measured criteria", "", table_md(rows), ""]
    scorer = task.get("concept_scorer")
    if scorer:
        lines += [
            "## Concept scorer",
            "",
            f"`{scorer.get('scorer')}` trained on {scorer.get('n_train')} texts ({scorer.get('trained_on', 'task data')}); "
            f"held-out agreement with labels: accuracy {_num(scorer.get('accuracy'))} "
            f"[{_num(scorer.get('accuracy_low'))}, {_num(scorer.get('accuracy_high'))}], AUC {_num(scorer.get('auc'))} "
            f"on {scorer.get('n_positive')}+{scorer.get('n_negative')} texts.",
            "",
        ]
    if results.get("missing_methods"):
        lines += ["## Methods not run", ""]
        lines += [f"- {m}: {why}" for m, why in results["missing_methods"].items()]
        lines.append("")
    for m, r in results["main"].items():
        cal = r.get("calibration")
        if cal:
            lines += [f"### Calibration of {m}", ""]
            choice = cal.get("choice") or {}
            used = r.get("settings") or {}
            lines.append(
                f"chosen: layers {choice.get('layer_label', used.get('layers'))} "
                f"strength {choice.get('strength', used.get('strength'))} "
                f"(within budget: {cal.get('within_budget')}; KL <= {cal.get('max_kl')}, ppl ratio <= {cal.get('max_ppl_ratio')})"
            )
            if cal.get("slopes"):
                s = cal["slopes"]
                lines.append(
                    f"per-example slopes over strengths {s['strengths']}: mean {s['mean_slope']:.3f}, wrong way {s['wrong_way_fraction']:.0%} of {s['n']}"
                )
            for note in cal.get("notes", []):
                lines.append(f"note: {note}")
            lines.append("")
    if task.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in task["notes"]] + [""]
    lines += ["## Sample generations (eval split)", ""]
    for m, r in results["main"].items():
        gens = r["eval"].get("generations") or []
        if gens:
            lines.append(f"- **{m}**: " + " / ".join(repr(g[:160]) for g in gens[:2]))
    lines += ["", "## Plots", ""] + [f"![{k}]({p.name})" for k, p in plots.items()]
    lines += ["", "How to read each number: see docs/criteria/ in the steerlab repository.", ""]
    return "\n".join(lines)


def _html(md_text: str, plots: dict[str, Path], title: str) -> str:
    body = []
    in_table = False
    for line in md_text.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            name = line[line.index("(") + 1 : -1]
            path = next((p for p in plots.values() if p.name == name), None)
            if path and path.exists():
                data = base64.b64encode(path.read_bytes()).decode()
                body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            text = html.escape(line[2:]).replace("**", "")
            body.append(f"<li>{text}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#eee}img{max-width:48%;margin:4px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )


def write(folder: str | Path, results: dict[str, Any]) -> dict[str, Path]:
    """Write results.json, report.md, index.html and the plot PNGs into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = derive(results)
    verdict = verdicts(results, rows)
    results = {**results, "derived": rows, "verdicts": verdict}
    plots = _plots(results, rows, folder)
    md_text = markdown(results, rows, verdict, plots)
    paths = {"json": folder / "results.json", "md": folder / "report.md", "html": folder / "index.html"}
    data = json.dumps(results, indent=1, default=_default)
    atomic_write(paths["json"], lambda tmp: Path(tmp).write_text(data))
    atomic_write(paths["md"], lambda tmp: Path(tmp).write_text(md_text))
    page = _html(md_text, plots, f"steerlab compare: {results['task']['name']}")
    atomic_write(paths["html"], lambda tmp: Path(tmp).write_text(page))
    return {**paths, **plots}


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def load(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "results.json").read_text())
