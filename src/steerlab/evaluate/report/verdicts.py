"""The verdicts as text: one plain sentence or two per criterion, rendered from :mod:`.findings`.

Every number and every choice (who wins, what is established) is made in ``findings``; this module
only words them, so another rendering (a web page, a different language) reuses the same findings.
"""

from __future__ import annotations

import math
from typing import Any

from steerlab.evaluate.report.findings import (
    EffectFinding,
    Findings,
    SteeringStanding,
    UsabilityEntry,
    findings,
    leaders,
)

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


def num(x: Any, fmt: str = ".3f") -> str:
    """A number formatted for a table, or a dash when missing or NaN."""
    ok = isinstance(x, int | float) and not (isinstance(x, float) and math.isnan(x))
    return format(x, fmt) if ok else "–"


def est(d: dict[str, Any] | None) -> str:
    """An estimate with its interval: ``value [low, high]``."""
    if not d:
        return "–"
    return f"{num(d['value'])} [{num(d['low'])}, {num(d['high'])}]"


def verdicts(results: dict[str, Any], rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    """One plain-language sentence or two per criterion, from fixed rules on the measured numbers."""
    found = findings(results, rows)
    if found is None:
        return {c: "not enough methods ran to compare" for c in CRITERIA}
    return render(found)


def render(f: Findings) -> dict[str, str]:
    return {
        "effect": _effect(f),
        "reliability": _reliability(f),
        "generalisation": _generalisation(f),
        "specificity": _specificity(f),
        "computational efficiency": _cost(f),
        "data efficiency": _data_efficiency(f),
        "composability": _composability(f),
        "usability": _usability(f),
        "reversibility": _reversibility(f),
    }


def _effect(f: Findings) -> str:
    e = f.effect
    family = e.families[e.best]
    text = (
        f"{e.best} ({family}) has the largest effect: {est(e.best_effect)} vs {est(e.baseline_effect)} unadapted"
        + (
            ""
            if e.established
            else " — but the intervals overlap, so the gain is not established at this sample size"
        )
        + "."
    )
    if e.overlapping:
        text += f" Its interval overlaps {', '.join(e.overlapping)}: no method wins on effect at this sample size."
    elif family == "prompting":
        text += " Prompting wins on effect here."
    else:
        text += f" {e.best} wins on effect here."
    if e.best_steering and family != "steering":
        text += f" The best steering method ({e.best_steering}) reaches {est(e.best_steering_effect)}."
    if e.best_steering and e.prompting_effect is not None and family != "prompting":
        text += f" Prompting reaches {est(e.prompting_effect)}."
    if e.near_chance:
        text += (
            f" Intervals that include chance ({e.chance}): {', '.join(e.near_chance)} — no reliable behaviour "
            "change there."
        )
    return text


def _lead(values: dict[str, float], what: str, fmt: str) -> str:
    """``what: m (v)`` for a single leader, or ``tied on what at v: a, b`` when several share the value."""
    top = leaders(values)
    value = format(values[top[0]], fmt)
    if len(top) > 1:
        return f"tied on {what} at {value}: {', '.join(top)}"
    return f"{what}: {top[0]} ({value})"


def _reliability(f: Findings) -> str:
    wrong, spread = f.reliability.wrong_way, f.reliability.seed_spread
    parts = []
    if wrong:
        parts.append(
            _lead(wrong, "fewest examples moved the wrong way vs unadapted", ".0%")
            + "; "
            + ", ".join(f"{m} {w:.0%}" for m, w in wrong.items())
        )
    if spread:
        parts.append(
            "spread across seeds at the largest data size: "
            + ", ".join(
                f"{m} sd {s['std']:.3f} ({s['seeds']} seed{'' if s['seeds'] == 1 else 's'})"
                for m, s in spread.items()
            )
        )
    return ("; ".join(parts) + ".") if parts else "not measured."


def _generalisation(f: Findings) -> str:
    gen, family = f.generalisation.ratios, f.generalisation.heldout_name
    if not gen:
        return (
            "no method had an established in-distribution gain (paired 95% interval above zero), so "
            "transfer to the held-out family cannot be judged; the held-out effects are in the table."
        )
    top = max(gen, key=gen.get)
    ratios = ", ".join(f"{m} {g:.2f}×" for m, g in gen.items())
    if gen[top] <= 0:
        return (
            f"no method with an established in-distribution gain kept any of it on the held-out family "
            f"({family}): held-out gain / eval gain {ratios}."
        )
    return (
        f"on the held-out family ({family}) {top} keeps the largest share of its "
        f"in-distribution gain ({gen[top]:.2f}×); {ratios}."
    )


def _specificity(f: Findings) -> str:
    s = f.specificity
    text = (
        _lead(s.kl, "lowest KL on neutral prompts (nats)", ".3f")
        + "; "
        + ", ".join(f"{m} {v:.3f}" for m, v in s.kl.items())
    )
    if s.ppl_ratio:
        text += "; perplexity ratio of its text under the unadapted model: " + ", ".join(
            f"{m} {v:.2f}" for m, v in s.ppl_ratio.items()
        )
    if s.capability_change:
        text += "; capability accuracy change: " + ", ".join(
            f"{m} {v:+.3f}" for m, v in s.capability_change.items()
        )
    return text + "."


def _cost(f: Findings) -> str:
    c = f.cost
    text = (
        _lead(c.build_seconds, "cheapest to build (s)", ".1f")
        + "; "
        + ", ".join(f"{m} {s:.1f}s" for m, s in c.build_seconds.items())
    )
    if c.speed_ratio:
        text += "; generation speed vs unadapted: " + ", ".join(
            f"{m} {v:.2f}×" for m, v in c.speed_ratio.items()
        )
    if c.extra_prompt_tokens:
        text += "; extra prompt tokens per request: " + ", ".join(
            f"{m} +{v}" for m, v in c.extra_prompt_tokens.items()
        )
    return text + "."


def _data_efficiency(f: Findings) -> str:
    if not f.data_efficiency:
        return "not measured."
    desc = [
        f"{m}: " + ", ".join(f"n={n}: {mean:.3f}" for n, mean in by_n.items())
        for m, by_n in f.data_efficiency.items()
    ]
    return "effect by training-set size (mean over seeds) — " + "; ".join(desc) + "."


def _composability(f: Findings) -> str:
    if not f.composability:
        return "not measured."
    return (
        "; ".join(
            f"{' + '.join(c.parts)}: {c.together:.3f} together vs best alone {c.best_alone:.3f} "
            f"({c.relation} the best single)"
            for c in f.composability
        )
        + "."
    )


def usability_of(u: UsabilityEntry) -> str:
    """What one method asks of its user (the scorecard's usability cell and the report's sentence)."""
    if u.family == "prompting":
        return f"{u.method}: write one instruction and pick examples; nothing to train or tune"
    if u.family == "steering":
        line = (
            f"{u.method}: layers {u.layer_label or u.setting.get('layers')} and strength {u.setting.get('strength')} chosen "
            f"automatically ({u.calibration_cells} calibration cells)"
        )
        if u.setting.get("base"):  # the conditional method: which vector it gates, and on what
            line += f", gating {u.setting['base']} by {u.setting.get('condition', 'a condition')}"
        if u.setting.get("within_budget") is False:
            line += (
                " — no cell stayed inside the KL/fluency budget, so this is the lowest-KL cell and it "
                "lies OUTSIDE the budget"
            )
        return line
    if u.family == "lora":
        return (
            f"{u.method}: rank, learning rate and epochs to set; needs gradients and completions to train on"
        )
    return f"{u.method}: {u.family}"


def _usability(f: Findings) -> str:
    return "; ".join(usability_of(u) for u in f.usability) + "."


def steering_sentence(s: SteeringStanding, e: EffectFinding) -> str:
    """Steering's standing on effect in one plain sentence (a loss is said as a loss)."""
    if s.outcome == "absent":
        return "No steering method ran here."
    best = f"{s.steering} {est(e.best_steering_effect)}"
    moved = (
        ""
        if s.beats_unadapted
        else f" Its interval does not clear the unadapted model's ({est(e.baseline_effect)}): "
        "no established effect from steering."
    )
    if s.outcome == "wins":
        return f"Steering wins on effect: {best} is above every prompting/LoRA interval.{moved}"
    if s.outcome == "loses":
        return (
            f"Steering loses on effect: {s.rival} {est(e.best_effect)} is above the best steering method, "
            f"{best}, and the intervals do not overlap.{moved}"
        )
    if s.outcome == "unopposed":
        return f"Only steering methods ran, so steering is not compared with prompting or LoRA here; best {best}.{moved}"
    return (
        f"Steering neither wins nor loses on effect: the best steering method, {best}, overlaps the "
        f"interval of the best method ({e.best} {est(e.best_effect)}).{moved}"
        if e.best != s.steering
        else f"Steering neither wins nor loses on effect: {best} overlaps a prompting/LoRA interval.{moved}"
    )


def _reversibility(f: Findings) -> str:
    r = f.reversibility
    text = (
        "all methods restored bit-identical logits, weights and hooks after removal"
        if not r.not_reversible
        else f"NOT exactly reversible: {', '.join(r.not_reversible)}"
    )
    if r.lora_merge_error is not None:
        text += (
            f"; LoRA merged into the weights and unmerged again leaves a max weight error of "
            f"{r.lora_merge_error:.2e} (unmerged use is exact)"
        )
    return text + "."
