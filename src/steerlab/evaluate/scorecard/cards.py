"""One task's scorecard as data: a row per method, a cell per criterion, the verdicts that go with it.

Every number comes from the report's own definitions (:func:`~steerlab.evaluate.report.numbers.derive`,
:func:`~steerlab.evaluate.report.findings.findings`) and every verdict from its rules
(:mod:`~steerlab.evaluate.report.verdicts`): the scorecard only lays them out per criterion. A cell
that was not measured says ``—`` and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steerlab.evaluate.report.findings import Findings, findings, steering_standing
from steerlab.evaluate.report.numbers import derive
from steerlab.evaluate.report.verdicts import CRITERIA, est, num, render, steering_sentence, usability_of

#: Methods the scorecard always lists (in this order), run or not; others that ran follow them.
ROW_METHODS = ("prompting", "lora", "mean_diff", "pca_diff", "probe", "iti", "learned", "conditional")
DASH = "—"
REFERENCE = "reference"


@dataclass(frozen=True)
class MethodRow:
    """One method's cells by criterion; ``ran=False`` rows carry the reason in ``note``."""

    method: str
    family: str
    cells: dict[str, str]
    ran: bool = True
    note: str = ""


@dataclass(frozen=True)
class TaskCard:
    """Everything the scorecard shows for one compare folder."""

    name: str
    kind: str
    eval_items: int | None
    rows: list[MethodRow]
    verdicts: dict[str, str]
    steering: str
    chance: str | None  # None: the task has no chance level


def task_card(results: dict[str, Any]) -> TaskCard:
    """The card of one results document (the content of a compare folder's results.json)."""
    rows = derive(results)
    found = findings(results, rows)
    task = results["task"]
    table = [_row(m, rows[m], found, results) for m in _ran_in_order(rows)]
    missing = results.get("missing_methods") or {}
    for m in ROW_METHODS:
        if m not in rows:
            why = missing.get(m) or "not run in this comparison (not among its methods)"
            table.append(MethodRow(m, DASH, dict.fromkeys(CRITERIA, DASH), ran=False, note=why))
    if found is None:
        verdict = dict.fromkeys(CRITERIA, "only the unadapted model ran: nothing to compare.")
        steering = "No adapted method ran here."
    else:
        verdict = render(found)
        steering = steering_sentence(steering_standing(found.effect), found.effect)
    return TaskCard(
        name=str(task.get("name", "?")),
        kind=str(task.get("kind", "?")),
        eval_items=task.get("eval"),
        rows=table,
        verdicts=verdict,
        steering=steering,
        chance=_chance(task, rows, found, results.get("model", "this model")),
    )


def _ran_in_order(rows: dict[str, dict[str, Any]]) -> list[str]:
    listed = ["baseline", *(m for m in ROW_METHODS if m in rows)]
    return listed + [m for m in rows if m not in listed]


def _chance(task: dict[str, Any], rows: dict[str, Any], found: Findings | None, model: str) -> str | None:
    """Whether the model is above chance on a task that has a chance level (A/B: 0.5)."""
    chance = task.get("chance")
    if chance is None or found is None:
        return None
    near = set(found.effect.near_chance)
    clear = [m for m in rows if m not in near]
    if not clear:
        return (
            f"Not above chance: on {model} every method's interval, the unadapted model's included, "
            f"contains chance ({chance}). No method, steering or not, changes its answers measurably here; "
            "the table is kept for the record and the verdicts below cannot name a winner."
        )
    return f"Above chance ({chance}): {', '.join(clear)} have intervals clear of it."


def _row(m: str, r: dict[str, Any], found: Findings | None, results: dict[str, Any]) -> MethodRow:
    base = m == "baseline"
    cells = {
        "effect": est(r["effect"]),
        "reliability": REFERENCE if base else _reliability(m, r, found),
        "generalisation": _generalisation(m, r, found),
        "specificity": _specificity(r, base),
        "computational efficiency": REFERENCE if base else _cost(r),
        "data efficiency": f"{DASH} no training (reference)" if base else _data_efficiency(m, found, results),
        "composability": f"{DASH} (reference)" if base else _composability(m, found),
        "usability": REFERENCE if base else _usability(m, found),
        "reversibility": _reversibility(m, r, results),
    }
    return MethodRow(m, str(r.get("family")), cells)


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _reliability(m: str, r: dict[str, Any], found: Findings | None) -> str:
    parts = []
    ci = r.get("wrong_way_ci")
    if ci:
        parts.append(f"{_pct(ci['value'])} wrong way [{_pct(ci['low'])}, {_pct(ci['high'])}]")
    elif r.get("wrong_way_fraction") is not None:
        parts.append(f"{_pct(r['wrong_way_fraction'])} wrong way")
    spread = found.reliability.seed_spread.get(m) if found else None
    if spread:
        seeds = f"{spread['seeds']} seed{'s' if spread['seeds'] != 1 else ''}"
        parts.append(f"seed sd {spread['std']:.3f} ({seeds} at n={spread['n']})")
    return " · ".join(parts) or f"{DASH} no per-example scores paired with the unadapted model"


def _generalisation(m: str, r: dict[str, Any], found: Findings | None) -> str:
    text = f"held-out {est(r.get('heldout'))}"
    if m == "baseline":
        return text
    ratio = found.generalisation.ratios.get(m) if found else None
    if ratio is not None:
        return f"{text} · keeps {ratio:.2f}× of its gain"
    return f"{text} · gain not established, transfer not judged"


def _specificity(r: dict[str, Any], base: bool) -> str:
    kl = est(r["kl_ci"]) if r.get("kl_ci") else num(r.get("kl"))
    parts = [f"KL {kl}"]
    if base:
        return parts[0] + " (reference)"
    if r.get("ppl_ratio") is not None:
        parts.append(f"ppl ×{r['ppl_ratio']:.2f}")
    if r.get("capability_change") is not None:
        parts.append(f"Δacc {r['capability_change']:+.3f}")
    return " · ".join(parts)


def _cost(r: dict[str, Any]) -> str:
    parts = [f"build {r['build_seconds']:.1f} s ({r['forward_passes']} fwd, {r['backward_passes']} bwd)"]
    if r.get("speed_ratio"):
        parts.append(f"{r['speed_ratio']:.2f}× tok/s")
    if r.get("extra_prompt_tokens"):
        parts.append(f"+{r['extra_prompt_tokens']} prompt tokens")
    return " · ".join(parts)


def _data_efficiency(m: str, found: Findings | None, results: dict[str, Any]) -> str:
    curves = found.data_efficiency if found else {}
    if m in curves:
        return ", ".join(f"n={n}: {mean:.3f}" for n, mean in curves[m].items()) + " (mean over seeds)"
    if not curves:
        return f"{DASH} not measured (no data-efficiency jobs in this folder)"
    asked = (results.get("config") or {}).get("efficiency_methods") or []
    return f"{DASH} not measured for {m} (curve run for {', '.join(asked) or ', '.join(curves)})"


def _composability(m: str, found: Findings | None) -> str:
    combos = found.composability if found else None
    if not combos:
        return f"{DASH} not measured"
    mine = [c for c in combos if m in c.parts]
    if not mine:
        return f"{DASH} not part of a measured combination"
    return " · ".join(
        f"{' + '.join(c.parts)}: {c.relation} the best alone ({c.together:.3f} vs {c.best_alone:.3f})"
        for c in mine
    )


def _usability(m: str, found: Findings | None) -> str:
    entry = next((u for u in found.usability if u.method == m), None) if found else None
    return usability_of(entry).removeprefix(f"{m}: ") if entry else f"{DASH} not recorded"


def _reversibility(m: str, r: dict[str, Any], results: dict[str, Any]) -> str:
    text = "exact (bit-identical logits, weights, hooks)" if r.get("reversible") else "NOT exact"
    merge = results["main"][m].get("merge_round_trip_max_abs_error")
    if merge is not None:
        text += f" · merged and unmerged: max weight error {merge:.1e}"
    return text
