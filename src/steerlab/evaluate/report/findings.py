"""What the verdicts say, as data: one small record per criterion, computed with fixed rules.

:func:`findings` picks the winners, the established differences and the lists the verdict sentences
quote; :mod:`.verdicts` only turns these records into text. See docs/criteria/ for the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from steerlab.evaluate.report.numbers import ci_separated, efficiency_curves, seed_spread

#: a combination differing from its best single part by less than this "matches" it
COMPOSE_TOLERANCE = 0.02


@dataclass(frozen=True)
class EffectFinding:
    best: str
    families: dict[str, str]
    best_effect: dict[str, Any]
    baseline_effect: dict[str, Any]
    established: bool  # the best method's interval clears the baseline's
    overlapping: list[str]  # other methods whose interval overlaps the best one's: then nobody "wins"
    best_steering: str | None
    best_steering_effect: dict[str, Any] | None
    prompting_effect: dict[str, Any] | None
    chance: float | None
    near_chance: list[str]  # methods whose interval includes chance


@dataclass(frozen=True)
class ReliabilityFinding:
    wrong_way: dict[str, float]
    seed_spread: dict[str, dict[str, float]]


@dataclass(frozen=True)
class GeneralisationFinding:
    ratios: dict[str, float]  # held-out gain / eval gain, for established positive gains only
    heldout_name: str | None


@dataclass(frozen=True)
class SpecificityFinding:
    kl: dict[str, float]
    ppl_ratio: dict[str, float]
    capability_change: dict[str, float]


@dataclass(frozen=True)
class CostFinding:
    build_seconds: dict[str, float]
    speed_ratio: dict[str, float]
    extra_prompt_tokens: dict[str, int]


@dataclass(frozen=True)
class Combination:
    parts: list[str]
    together: float
    best_alone: float
    relation: str  # "adds to", "interferes with" or "matches"


@dataclass(frozen=True)
class UsabilityEntry:
    method: str
    family: str
    setting: dict[str, Any]
    calibration_cells: int
    layer_label: str | None = None  # the calibrated layers as written in the sweep ("7-20"), when recorded


@dataclass(frozen=True)
class ReversibilityFinding:
    not_reversible: list[str]
    lora_merge_error: float | None


@dataclass(frozen=True)
class Findings:
    effect: EffectFinding
    reliability: ReliabilityFinding
    generalisation: GeneralisationFinding
    specificity: SpecificityFinding
    cost: CostFinding
    data_efficiency: dict[str, dict[int, float]]  # method -> training size -> mean effect over seeds
    composability: list[Combination] | None  # None: not measured
    usability: list[UsabilityEntry]
    reversibility: ReversibilityFinding


def findings(results: dict[str, Any], rows: dict[str, dict[str, Any]]) -> Findings | None:
    """Every criterion's finding, or None when fewer than two methods (baseline + one) ran."""
    adapted = {m: r for m, r in rows.items() if m != "baseline"}
    if not adapted or "baseline" not in rows:
        return None
    curves = efficiency_curves(results)
    return Findings(
        effect=_effect(results["task"], rows, adapted),
        reliability=ReliabilityFinding(
            {
                m: r["wrong_way_fraction"]
                for m, r in adapted.items()
                if r.get("wrong_way_fraction") is not None
            },
            seed_spread(curves),
        ),
        generalisation=GeneralisationFinding(
            {
                m: r["generalisation_ratio"]
                for m, r in adapted.items()
                if r.get("generalisation_ratio") is not None and r.get("gain", 0) > 0
            },
            results["task"].get("heldout_name"),
        ),
        specificity=SpecificityFinding(
            {m: r["kl"] for m, r in adapted.items()},
            {m: r["ppl_ratio"] for m, r in adapted.items() if r.get("ppl_ratio") is not None},
            {m: r["capability_change"] for m, r in adapted.items() if r.get("capability_change") is not None},
        ),
        cost=CostFinding(
            {m: r["build_seconds"] for m, r in adapted.items()},
            {m: r["speed_ratio"] for m, r in adapted.items() if r.get("speed_ratio")},
            {m: r["extra_prompt_tokens"] for m, r in adapted.items() if r.get("extra_prompt_tokens")},
        ),
        data_efficiency={m: {n: float(np.mean(by_n[n])) for n in sorted(by_n)} for m, by_n in curves.items()},
        composability=_combinations(results.get("compose") or {}),
        usability=[
            UsabilityEntry(
                m,
                r["family"],
                r.get("setting") or {},
                len((results["main"][m].get("calibration") or {}).get("rows", [])),
                _layer_label(results["main"][m].get("calibration") or {}, r.get("setting") or {}),
            )
            for m, r in adapted.items()
        ],
        reversibility=ReversibilityFinding(
            [m for m, r in adapted.items() if not r["reversible"]],
            results["main"].get("lora", {}).get("merge_round_trip_max_abs_error"),
        ),
    )


def _effect(
    task: dict[str, Any], rows: dict[str, dict[str, Any]], adapted: dict[str, dict[str, Any]]
) -> EffectFinding:
    base = rows["baseline"]
    best = max(adapted, key=lambda m: adapted[m]["effect"]["value"])
    families = {m: r["family"] for m, r in rows.items()}
    steer = [m for m in adapted if families[m] == "steering"]
    best_steer = max(steer, key=lambda m: adapted[m]["effect"]["value"]) if steer else None
    chance = task.get("chance")
    near = (
        [m for m, r in rows.items() if r["effect"]["low"] <= chance <= r["effect"]["high"]]
        if chance is not None
        else []
    )
    return EffectFinding(
        best=best,
        families=families,
        best_effect=adapted[best]["effect"],
        baseline_effect=base["effect"],
        established=ci_separated(adapted[best]["effect"], base["effect"]),
        overlapping=[
            m
            for m in adapted
            if m != best and not ci_separated(adapted[best]["effect"], adapted[m]["effect"])
        ],
        best_steering=best_steer,
        best_steering_effect=adapted[best_steer]["effect"] if best_steer else None,
        prompting_effect=adapted["prompting"]["effect"] if "prompting" in adapted else None,
        chance=chance,
        near_chance=near,
    )


@dataclass(frozen=True)
class SteeringStanding:
    """Where steering stands on effect, from the same interval rule as the effect verdict.

    ``outcome``: ``"wins"`` (the best method is steering and no other interval overlaps it),
    ``"loses"`` (a non-steering method is best and its interval clears the best steering method's),
    ``"undecided"`` (the best method's interval overlaps one of the other family's), ``"unopposed"``
    (no prompting or LoRA ran to compare with) or ``"absent"`` (no steering method ran).
    ``beats_unadapted``: the best steering method's interval lies above the unadapted model's.
    """

    outcome: str
    steering: str | None
    rival: str | None  # the best non-steering method, when it is the best overall
    beats_unadapted: bool


def steering_standing(e: EffectFinding) -> SteeringStanding:
    """Steering's standing on effect, read off an :class:`EffectFinding` (no second copy of its rule)."""
    if e.best_steering is None or e.best_steering_effect is None:
        return SteeringStanding("absent", None, None, False)
    beats = ci_separated(e.best_steering_effect, e.baseline_effect) and (
        e.best_steering_effect["value"] > e.baseline_effect["value"]
    )
    others = [m for m, f in e.families.items() if m != "baseline" and f != "steering"]
    if not others:
        return SteeringStanding("unopposed", e.best_steering, None, beats)
    if e.families[e.best] == "steering":
        outcome = "undecided" if any(e.families[m] != "steering" for m in e.overlapping) else "wins"
        return SteeringStanding(outcome, e.best, None, beats)
    outcome = "undecided" if e.best_steering in e.overlapping else "loses"
    return SteeringStanding(outcome, e.best_steering, e.best, beats)


def _layer_label(calibration: dict[str, Any], setting: dict[str, Any]) -> str | None:
    """The calibrated layers as the sweep wrote them (``7-20``): the choice's, else the matching cell's."""
    label = (calibration.get("choice") or {}).get("layer_label")
    if label:
        return label
    layers = setting.get("layers")
    return next((c["layer_label"] for c in calibration.get("rows") or [] if c.get("layers") == layers), None)


def leaders(values: dict[str, float], *, lowest: bool = True) -> list[str]:
    """The methods that share the best value (several on a tie: then none of them is "the best")."""
    if not values:
        return []
    best = min(values.values()) if lowest else max(values.values())
    return [m for m, v in values.items() if v == best]


def _combinations(compose: dict[str, Any]) -> list[Combination] | None:
    singles = {tuple(v["parts"]): v["effect"] for v in (compose.get("_single") or {}).values()}
    combos = {k: v for k, v in compose.items() if k != "_single"}
    if not (combos and singles):
        return None
    out = []
    for v in combos.values():
        known = [a for a in (singles.get((p,)) for p in v["parts"]) if a is not None]
        if known:
            best_alone = max(known)
            if v["effect"] > best_alone + COMPOSE_TOLERANCE:
                relation = "adds to"
            elif v["effect"] < best_alone - COMPOSE_TOLERANCE:
                relation = "interferes with"
            else:
                relation = "matches"
            out.append(Combination(list(v["parts"]), v["effect"], best_alone, relation))
    return out
